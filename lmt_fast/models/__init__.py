"""The networks of lmt_fast: LOMIT (generator, discriminator), MGST (purifier) and their configurations."""
from lmt_fast.models.config import COMPAT_MODES, DEFAULT_ATTRIBUTES, LOMITConfig
from lmt_fast.models.lomit import (
    ExemplarCode,
    GeneratorOutput,
    LOMITDiscriminator,
    LOMITGenerator,
    PairedExemplar,
    count_parameters,
)
from lmt_fast.models.mgst import MGSTConfig, MGSTDiscriminator, MGSTGenerator, MGSTStyle

__all__ = [
    "COMPAT_MODES", "DEFAULT_ATTRIBUTES", "LOMITConfig", "ExemplarCode", "GeneratorOutput",
    "LOMITDiscriminator", "LOMITGenerator", "PairedExemplar", "count_parameters",
    "MGSTConfig", "MGSTDiscriminator", "MGSTGenerator", "MGSTStyle",
]
