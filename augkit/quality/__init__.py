"""Generative-quality metrics that need no downloaded weights.

``diversity`` (per-class MS-SSIM and the collapse alarm) and ``augkit quality``: ``features`` (augkit's
own classifier as the feature extractor, cached), ``distances`` (Fréchet distance, KID), ``manifold``
(precision/recall, density/coverage), ``memorisation`` (near copies of training images), ``cas``
(train on synthetic, test on real), ``two_sample`` (real-vs-fake classifier), ``assess`` (puts them
together per class and overall), ``report`` (quality.json, quality.md) and ``pipeline`` (from files).
"""
