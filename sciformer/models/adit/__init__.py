"""ADiT: all-atom autoencoder + latent Diffusion Transformer trained with flow matching.

Sizes: ``adit-vae`` is ADiT's default VAE (51.09 M); ``adit-dit-s|b|l`` are its DiT variants (32.56 M,
129.71 M, 457.03 M as measured in the fact sheet); ``-tiny`` sizes run on a CPU in minutes.
"""

from sciformer.models.adit.autoencoder import AllAtomAutoencoder, AutoencoderConfig
from sciformer.models.adit.dit import DiTConfig, LatentDiT
from sciformer.models.registry import register

register("adit-vae", AllAtomAutoencoder)
register("adit-vae-small", AllAtomAutoencoder, d_model=256, num_heads=8, dim_feedforward=1024,
         encoder_layers=4, decoder_layers=4)
register("adit-vae-tiny", AllAtomAutoencoder, d_model=128, num_heads=4, dim_feedforward=512,
         encoder_layers=2, decoder_layers=2)
register("adit-dit-s", LatentDiT, hidden_size=384, depth=12, num_heads=6)
register("adit-dit-b", LatentDiT, hidden_size=768, depth=12, num_heads=12)
register("adit-dit-l", LatentDiT, hidden_size=1024, depth=24, num_heads=16)
register("adit-dit-small", LatentDiT, hidden_size=256, depth=6, num_heads=8)
register("adit-dit-tiny", LatentDiT, hidden_size=128, depth=4, num_heads=4)

__all__ = ["AllAtomAutoencoder", "AutoencoderConfig", "DiTConfig", "LatentDiT"]
