"""The named network sizes, in plain Python so that the Config (and with it
``--help``) needs neither Flax nor JAX."""

# The paper's encoder: channels of its 11 strided convs (Pascual et al. 2017).
PAPER_FEATURES = (16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 1024)

# Named model sizes: (encoder features, kernel size, window size).
MODEL_SIZES = {
    # Pascual et al. 2017: 11 layers, kernel 31, windows of 2^14 samples.
    'paper': (PAPER_FEATURES, 31, 16384),
    # Same depth, kernel and window as the paper, 1/8 of the width: trains the
    # demo on two CPU cores in about two minutes.
    'demo': (tuple(max(2, f // 8) for f in PAPER_FEATURES), 31, 16384),
    # For unit tests: 5 layers on 1024-sample windows.
    'tiny': ((4, 8, 8, 16, 16), 15, 1024),
}
