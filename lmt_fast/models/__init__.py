"""The networks of lmt_fast: LOMIT (generator, discriminator) and their configuration."""
from lmt_fast.models.config import COMPAT_MODES, DEFAULT_ATTRIBUTES, LOMITConfig
from lmt_fast.models.lomit import (
    ExemplarCode,
    GeneratorOutput,
    LOMITDiscriminator,
    LOMITGenerator,
    count_parameters,
)

__all__ = [
    "COMPAT_MODES", "DEFAULT_ATTRIBUTES", "LOMITConfig", "ExemplarCode", "GeneratorOutput",
    "LOMITDiscriminator", "LOMITGenerator", "count_parameters",
]
