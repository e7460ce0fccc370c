import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Generated data sets are cached in a per-session folder, never in the user's home."""
    monkeypatch.setenv("MINIGEN_CACHE", str(tmp_path_factory.getbasetemp() / "minigen-cache"))


@pytest.fixture(scope="session")
def text_autoencoder(tmp_path_factory):
    """A tiny autoencoder of captioned-shapes (32x32 RGB -> 2x16x16 latents), for the text-to-image
    models of the tests (train_ldm.py --condition text --autoencoder ...)."""
    import train_vae
    out = tmp_path_factory.mktemp("text-vae") / "vae"
    args = ["--dataset", "captioned-shapes", "--preset", "tiny", "--steps", "2", "--batch-size", "8", "--max-images",
            "32", "--sample-every", "0", "--out", str(out)]
    assert train_vae.run(train_vae.main, args) == 0
    return str(out / "last.pt")


@pytest.fixture(scope="session")
def text_model(tmp_path_factory, text_autoencoder):
    """A tiny latent text-to-image model of captioned-shapes (one training step): for the studio and
    for distillation, which need a text checkpoint, not a good one."""
    import train_ldm
    out = tmp_path_factory.mktemp("text-model") / "text"
    args = ["--preset", "tiny", "--steps", "1", "--batch-size", "4", "--sample-every", "0", "--sample-steps", "1",
            "--dataset", "captioned-shapes", "--condition", "text", "--autoencoder", text_autoencoder,
            "--max-images", "16", "--out", str(out)]
    assert train_ldm.run(train_ldm.main, args) == 0
    return out / "last.pt"
