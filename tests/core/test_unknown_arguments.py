"""Unknown keyword arguments are a TypeError naming them; Deep Lake v3's few extras are accepted by name."""

from __future__ import annotations

import pytest

import tensordb
from tensordb.errors import SampleError


@pytest.fixture
def ds():
    ds = tensordb.empty("mem://unknown-arguments", overwrite=True)
    yield ds
    ds.close()


def test_a_misspelt_keyword_is_named_with_the_closest_one(ds):
    with pytest.raises(TypeError, match=r"create_tensor\(\) got unexpected keyword arguments: 'htpye' \(did you "
                                        r"mean 'htype'\?\)"):
        ds.create_tensor("x", htpye="text")
    assert list(ds.tensors) == []


def test_deeplake_v3_arguments_are_accepted(ds):
    ds.create_tensor("x", htype="text", compression="lz4", hidden=False, create_id_tensor=False, verbose=True,
                     sample_compression=None)
    assert ds.x.meta.compression == "lz4"


def test_sample_compression_is_refused_rather_than_ignored(ds):
    with pytest.raises(SampleError, match="sample_compression='jpeg' is not supported"):
        ds.create_tensor("x", sample_compression="jpeg")
    assert list(ds.tensors) == []
