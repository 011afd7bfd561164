"""The release number, in one place (the package, the CLI and the release datasets read it)."""

__version__ = "0.6.0"
