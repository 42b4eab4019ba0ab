"""lmt_fast: exemplar-guided local image translation (LOMIT, MGST) as a fast inference engine."""
__version__ = "0.1.0"

from lmt_fast import _extension  # noqa: F401  (loads the compiled kernels if present, never raises)

__all__ = ["Translator", "TranslationResult", "ExemplarStyle", "__version__"]


def __getattr__(name: str):
    # The Translator pulls in the models and image I/O; `import lmt_fast.ops` alone should not.
    if name in ("Translator", "TranslationResult", "ExemplarStyle"):
        from lmt_fast import translator

        return getattr(translator, name)
    raise AttributeError(f"module 'lmt_fast' has no attribute {name!r}")
