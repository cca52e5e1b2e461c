"""musicnn's fixed input and output shapes, and the weights genre was checked against.

One place for the numbers every layer needs: settings validate segment lengths against the
patch, shards check column widths, the extractor builds its mel front end and networks from
them. The wheel's four taggers (two musicnn, two VGG) share the input; their columns'
widths are in :data:`COLUMN_DIMS`. Nothing here imports anything; :mod:`genre.pretrained`
and :mod:`genre.pretrained_vgg` hold the networks themselves.
"""

from __future__ import annotations

__all__ = [
    "SAMPLE_RATE",
    "N_FFT",
    "HOP_LENGTH",
    "N_MELS",
    "PATCH_FRAMES",
    "PATCH_SAMPLES",
    "MIN_SEGMENT_SAMPLES",
    "N_PARAMS",
    "EMBEDDING_DIM",
    "POOL_DIM",
    "N_TAGS",
    "VGG_N_PARAMS",
    "VGG_EMBEDDING_DIM",
    "VGG_POOL_DIM",
    "COLUMN_DIMS",
    "WHEEL_SHA256",
    "INSTALL_COMMAND",
]

#: musicnn was trained on 16 kHz mono.
SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
#: Frames per patch, as musicnn's extractor computes it for 3 s:
#: ``librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1``.
PATCH_FRAMES = 187
#: One 3 s segment at 16 kHz (its 188th centred frame is not used).
PATCH_SAMPLES = 48000
#: The shortest segment that fills one patch: 186 hops of 256 samples (2.976 s).
MIN_SEGMENT_SAMPLES = (PATCH_FRAMES - 1) * HOP_LENGTH
#: Weights of each musicnn tagger (``MSD_musicnn``, ``MTT_musicnn``).
N_PARAMS = 792_079
#: Width of musicnn's penultimate dense layer (the embedding).
EMBEDDING_DIM = 200
#: musicnn's mid-level features, max- then mean-pooled over time.
POOL_DIM = 1506
#: Tags in each of the two vocabularies (MSD and MagnaTagATune).
N_TAGS = 50
#: Weights of each VGG tagger (``MSD_vgg``, ``MTT_vgg``).
VGG_N_PARAMS = 607_030
#: The VGG's last pool (128 filters): its maximum over its 2 time steps, then its mean.
VGG_EMBEDDING_DIM = 256
#: The VGG's five pools (128 filters each), maximum over time and mel, then mean.
VGG_POOL_DIM = 1280
_MUSICNN_COLUMNS = {"": EMBEDDING_DIM, "_pool": POOL_DIM, "_tags": N_TAGS}
_VGG_COLUMNS = {"": VGG_EMBEDDING_DIM, "_pool": VGG_POOL_DIM, "_tags": N_TAGS}
#: Each pretrained extractor, in canonical order → the suffix of each of its columns →
#: that column's length: ``<name>`` (embedding), ``<name>_pool``, ``<name>_tags``.
COLUMN_DIMS = {
    "musicnn_msd": _MUSICNN_COLUMNS,
    "musicnn_mtt": _MUSICNN_COLUMNS,
    "vgg_msd": _VGG_COLUMNS,
    "vgg_mtt": _VGG_COLUMNS,
}
#: sha256 of the musicnn 0.1.0 wheel whose checkpoints genre converts.
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
INSTALL_COMMAND = "pip install --no-deps --require-hashes -r requirements-musicnn.txt"
