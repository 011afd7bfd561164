"""Format layer: how chunks, manifests and records are laid out as bytes."""
