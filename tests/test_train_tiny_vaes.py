"""`examples/synthetic_av/train_tiny_vaes.py`'s causal video VAE: two stages (the first saved and reused, so a polish
can be rerun from it), then `scaling_factor` set from the measured latent std."""

import argparse

import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo15
from script_loading import load_script


vaes = load_script("train_tiny_vaes", "examples/synthetic_av")


@pytest.mark.slow
def test_causal_video_vae_trains_in_two_stages_and_reuses_the_first(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = argparse.Namespace(
            out=str(tmp_path), batch_size=1, seed=0, causal_video_steps=1, causal_video_polish_steps=1
        )
        vae = vaes.train_causal_video_vae(args)
        stage1 = AutoencoderKLHunyuanVideo15.from_pretrained(tmp_path / "causal_vae_stage1")
        # The polish moved the weights away from the saved first stage; the scale is set after it.
        assert any(not torch.equal(a, b) for a, b in zip(vae.state_dict().values(), stage1.state_dict().values()))
        assert vae.config.scaling_factor != stage1.config.scaling_factor

        # A second run reuses the first stage (whatever --causal_video_steps says: 50 steps would show in the
        # weights and take minutes) and polishes it again. Not bit-exact: the posterior samples draw on torch's
        # global RNG, which the first run's first stage had advanced.
        weights = (tmp_path / "causal_vae_stage1" / "diffusion_pytorch_model.safetensors").read_bytes()
        again = vaes.train_causal_video_vae(argparse.Namespace(**{**vars(args), "causal_video_steps": 50}))
        assert (tmp_path / "causal_vae_stage1" / "diffusion_pytorch_model.safetensors").read_bytes() == weights
        for a, b in zip(vae.state_dict().values(), again.state_dict().values()):
            torch.testing.assert_close(a, b)
    finally:
        torch.set_num_threads(threads)
