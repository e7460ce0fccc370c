"""The networks. They know nothing of diffusion or training: tensors in, tensors out.

    unet.py    UNet(x_t, t, y=None): the denoiser; it owns its conditioning (null_condition,
               drop_condition) so that guidance never needs to know what a label is
    dcgan.py   Generator(z, y), Discriminator(x, y)
    vit.py     ViT(x, t=None): classifier, judge of generated images, noise-aware guide
    autoencoder.py  Autoencoder: encode(x) -> μ, log σ²; decode(z) -> x̂ (a VAE, for latent diffusion)
    text.py    TextEncoder(ids, mask) -> per-token features, pooled vector (the ViT's blocks)
    clip.py    CLIP: the ViT and the text encoder in one joint space; the InfoNCE loss
    text_to_image.py  TextToImage(x_t, t, ids, mask): the text encoder feeding the U-Net's cross-attention
"""
