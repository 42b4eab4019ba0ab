"""Datasets for training and evaluating local image translation."""

from importlib import import_module

# Imported lazily: `python -m lmt_train.data.synthetic` then runs without the
# module being imported twice, and importing the package stays cheap. The
# synthetic module's __all__ is this list, so the two cannot drift apart.
SYNTHETIC_EXPORTS = (
    "ATTRIBUTES",
    "BACKGROUND_KINDS",
    "DEFAULT_ATTRIBUTES",
    "HAIR_ATTRIBUTES",
    "HAIR_COLOURS",
    "SMILING",
    "Rendered",
    "SceneParams",
    "SyntheticPairs",
    "SyntheticPortraits",
    "TranslationPair",
    "hair_colours_for",
    "image_to_tensor",
    "label_vector",
    "make_translation_pair",
    "render",
    "sample_scene",
    "save_sample_images",
)
_LAZY_EXPORTS = {name: ".synthetic" for name in SYNTHETIC_EXPORTS}
_LAZY_EXPORTS.update({name: ".folder" for name in ("AttributeFolder", "DatasetError", "LabelledImages")})
_LAZY_EXPORTS.update({name: ".celeba" for name in ("CelebA", "HAIR_COLOUR_ATTRIBUTES")})

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        return getattr(import_module(_LAZY_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
