"""Shared networks: time embeddings, velocity fields (MLP, U-Net, DiT, SD3's MM-DiT), the feature
classifier of the Fréchet classifier distance, population embedders and point-cloud models."""
