"""Shared network blocks: time embeddings and MLP velocity fields."""
