"""Shared GAN/classifier training machinery: losses, DiffAugment, EMA weights and resumable checkpoints."""
