"""The networks. They know nothing of diffusion or training: tensors in, tensors out.

    unet.py    UNet(x_t, t, y=None): the denoiser; it owns its conditioning (null_condition,
               drop_condition) so that guidance never needs to know what a label is
    dcgan.py   Generator(z, y), Discriminator(x, y)
    vit.py     ViT(x, t=None): classifier, judge of generated images, noise-aware guide
    autoencoder.py  Autoencoder: encode(x) -> μ, log σ²; decode(z) -> x̂ (a VAE, for latent diffusion)
"""
