import h5py
import numpy as np
import pytest
import torch

from conftest import TILING
from fiveflow.embed.encoders import build_encoder, state_dict_sha256
from fiveflow.embed.extract import embed_slide
from fiveflow.slides.tiling import tile_slide


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("resnet18", "random", seed=0)


def test_random_encoder_is_seeded(encoder):
    again = build_encoder("resnet18", "random", seed=0)
    other = build_encoder("resnet18", "random", seed=1)
    assert again.weights_sha256 == encoder.weights_sha256 != other.weights_sha256
    assert encoder.dim == 512 and len(encoder.mean) == 3


def test_local_checkpoint_roundtrip(tmp_path, encoder):
    ckpt = tmp_path / "enc.pt"
    torch.save({"state_dict": encoder.model.state_dict()}, ckpt)
    loaded = build_encoder("resnet18", str(ckpt), seed=123)  # seed irrelevant: weights come from the file
    assert loaded.weights_sha256 == encoder.weights_sha256
    from safetensors.torch import save_file

    st = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, str(st))
    assert build_encoder("resnet18", str(st)).weights_sha256 == encoder.weights_sha256


def test_wrong_architecture_checkpoint_is_rejected(tmp_path, encoder):
    ckpt = tmp_path / "enc.pt"
    torch.save(encoder.model.state_dict(), ckpt)
    with pytest.raises(ValueError, match="does not fit"):
        build_encoder("resnet34", str(ckpt))
    with pytest.raises(FileNotFoundError):
        build_encoder("resnet18", str(tmp_path / "absent.pt"))


def test_embed_writes_bag_with_metadata(small_slide, tmp_path, encoder):
    tile_slide(small_slide, "small", TILING, tmp_path / "c.parquet")
    res = embed_slide(small_slide, tmp_path / "c.parquet", encoder, tmp_path / "f.h5", batch_size=8, progress=False)
    with h5py.File(tmp_path / "f.h5") as f:
        feats, coords = f["features"][:], f["coords"][:]
        assert feats.shape == (res["tiles"], 512) and coords.shape == (res["tiles"], 2)
        assert f.attrs["encoder"] == "resnet18" and f.attrs["weights_sha256"] == encoder.weights_sha256
        assert f.attrs["target_mpp"] == 1.0 and f.attrs["patch_size_px"] == 128
    assert np.isfinite(feats).all() and feats.std() > 0
    # same tiles, same weights -> same features (deterministic); batch size does not matter
    embed_slide(small_slide, tmp_path / "c.parquet", encoder, tmp_path / "g.h5", batch_size=3, progress=False)
    with h5py.File(tmp_path / "g.h5") as g:
        np.testing.assert_allclose(g["features"][:], feats, rtol=1e-4, atol=1e-4)


def test_slide_excluded_by_tiling_gives_an_empty_bag(tmp_path, encoder):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"junk" * 10)
    tile_slide(bad, "broken", TILING, tmp_path / "c.parquet", on_error="record")
    res = embed_slide(bad, tmp_path / "c.parquet", encoder, tmp_path / "f.h5", progress=False)
    assert res["tiles"] == 0
    with h5py.File(tmp_path / "f.h5") as f:
        assert f["features"].shape == (0, 512) and f.attrs["tiling_status"] == "failed"


def test_state_dict_hash_sensitive_to_values(encoder):
    m = build_encoder("resnet18", "random", 0).model
    h0 = state_dict_sha256(m)
    with torch.no_grad():
        next(m.parameters()).view(-1)[0] += 1e-3
    assert state_dict_sha256(m) != h0
