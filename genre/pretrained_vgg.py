"""The musicnn wheel's VGG taggers (``MSD_vgg``, ``MTT_vgg``) as a Keras 3 network.

Besides its two musicnn models the ``musicnn`` wheel ships two taggers of the baseline
architecture of Pons et al., *End-to-end learning for music audio tagging at scale*
(ISMIR 2018): a VGG-like stack of five 3 × 3 convolutions, each ReLU → batch norm →
max-pool, and one dense sigmoid layer on the flattened last pool. Same input as musicnn
(:func:`genre.pretrained.log_mel`: 187 frames × 96 mel bands, 3 s at 16 kHz), same two
50-tag vocabularies, 607 030 weights each. This module only builds the network and
names which checkpoint variable fills which weight; :mod:`genre.pretrained` loads it and
runs it (``load_pretrained``, ``MusicnnExtractor``).

Per patch the network gives three features:

=============  ======  ========================================================
``embedding``  256     the last pool (what the tag layer reads: 2 time steps ×
                       128 filters), its maximum over time, then its mean
``pool``       1 280   each of the five pools' 128 filters, maximum over time
                       and mel (640), then mean over time and mel (640)
``tags``       50      tag probabilities
=============  ======  ========================================================

The network has no dense embedding layer, unlike musicnn: its tag layer reads the
last pool directly (256 values, flattened in time order). The embedding keeps those
values but forgets which half of the patch each came from (for two steps, maximum and
mean determine the pair up to order): where a segment starts in the music is arbitrary.
The last pool does not see all of the patch: its 4 × 4 windows (stride 4) leave out the
last 3 of the 11 steps and 2 of the 6 bands below it, so through the convolutions the tag
layer sees input frames 0–160 of 187 (the first 2.6 s) and mel bands 0–93 of 96. The
``pool`` column sees all of it, at every depth.
"""

from __future__ import annotations

from genre.musicnn_spec import N_MELS, PATCH_FRAMES

__all__ = ["CHECKPOINT_LAYERS", "build_vgg"]

_BN_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization's default
_FILTERS = 128  # define_model's num_filters for MSD_vgg and MTT_vgg
#: (pool size, strides), (time, mel), of the five max-pools; "valid" padding, as TF1's default.
_POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))

#: TF1 variable scope → Keras layer, in the order musicnn's ``models.vgg`` creates them.
CHECKPOINT_LAYERS = (
    ("batch_normalization", "input_bn"),
    *(
        pair
        for i in range(1, 6)
        for pair in ((f"{i}CNN", f"conv{i}"), (f"batch_normalization_{i}", f"conv{i}_bn"))
    ),
    ("dense", "tags"),
)


def build_vgg(*, n_tags: int = 50):
    """musicnn's ``vgg`` (models.py, ``num_filters=128``) in Keras 3.

    Batch norm of the input; five blocks of Conv2D(128, 3 × 3, "same") → ReLU → batch
    norm → max-pool (4 × 1 stride 2 × 2, then 2 × 2 three times, then 4 × 4 stride 4:
    187 × 96 → 92 × 48 → 46 × 24 → 23 × 12 → 11 × 6 → 2 × 1); flatten; dense sigmoid.
    Dropout is left out: this model only predicts. The input length is fixed: the tag
    layer reads the flattened 2 × 1 × 128 last pool.

    Parameters
    ----------
    n_tags : int > 0

    Returns
    -------
    model : keras.Model
        Input ``(batch, 187, 96)`` log-mel; outputs a dict: ``tags`` ``(batch, n_tags)``,
        ``embedding`` ``(batch, 256)``, ``pool`` ``(batch, 1280)`` (see the module's
        notes). Its weights are random until ``genre.pretrained.load_pretrained`` fills them.
    """
    import keras
    from keras import layers, ops

    spec = keras.Input((PATCH_FRAMES, N_MELS), name="log_mel")
    x = layers.Reshape((PATCH_FRAMES, N_MELS, 1), name="channel")(spec)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name="input_bn")(x)
    pools = []
    for i, (size, strides) in enumerate(_POOLS, 1):
        x = layers.Conv2D(_FILTERS, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"conv{i}_bn")(x)
        x = layers.MaxPooling2D(size, strides=strides, name=f"pool{i}")(x)
        pools.append(x)

    def peak(x):  # (batch, time, mel, filters) → (batch, filters)
        return ops.max(x, axis=(1, 2))

    def mean(x):
        # Over mel, then over time: TensorFlow's CPU reduction of pool1's 92 × 48 values
        # in one float32 sum is off by up to ~1e-5 relative; two short sums, by ~3e-7.
        return ops.mean(ops.mean(x, axis=2), axis=1)

    last = pools[-1]  # (batch, 2, 1, 128)
    embedding = layers.Concatenate(name="embedding")([peak(last), mean(last)])
    pool = layers.Concatenate(name="pool")([peak(p) for p in pools] + [mean(p) for p in pools])
    tags = layers.Dense(n_tags, activation="sigmoid", name="tags")(
        layers.Flatten(name="flatten")(last)  # (time, mel, filter) order, as TF1's flatten
    )
    return keras.Model(spec, {"tags": tags, "embedding": embedding, "pool": pool}, name="vgg")
