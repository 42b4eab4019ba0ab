"""Weights of the official LOMIT code (AnonymousIclrAuthor/Highway-Adaptive-Instance-Normalization).

`official_config` gives the LOMITConfig of an official `Generator(...)` / `Discriminator(...)`, and
`convert_official_state_dict` renames an official state dict onto lmt_fast's modules. With
compat="official" the converted model reproduces the official outputs (tests/test_official_golden.py).
"""
from __future__ import annotations

import re

import torch

from lmt_fast.models.config import DEFAULT_ATTRIBUTES, LOMITConfig

# Official hard-coded sizes: 2 down-samplings, 2 extra style down-samplings, 3 x 2 mask convs.
_N_DOWN = 2


def official_config(conv_dim: int = 64, repeat_num: int = 8, style_dim: int = 8, mlp_dim: int = 256,
                    image_size: int = 128, d_conv_dim: int = 64, d_repeat_num: int = 6,
                    attributes=DEFAULT_ATTRIBUTES, compat: str = "official") -> LOMITConfig:
    """The config matching official constructor arguments (defaults: configs/config_celebA.yaml)."""
    mlp_blocks = repeat_num // 2 - 3
    if mlp_blocks < 0:
        raise ValueError(f"official repeat_num={repeat_num} gives a negative MLP depth; it must be >= 6")
    return LOMITConfig(image_size=image_size, base_dim=conv_dim, n_downsample=_N_DOWN, n_res_blocks=repeat_num,
                       style_dim=style_dim, style_extra_downsample=2, mlp_dim=mlp_dim, mlp_blocks=mlp_blocks,
                       mask_blocks=6, attributes=tuple(attributes), d_base_dim=d_conv_dim,
                       d_layers=d_repeat_num, compat=compat)


def _generator_rules(cfg: LOMITConfig) -> list[tuple[str, str]]:
    """(official prefix, lmt_fast prefix) pairs, most specific first."""
    n_res = cfg.n_res_blocks // 2
    rules = [("c_encoder.main.0.", "content_encoder.stem.")]
    rules += [(f"c_encoder.main.{1 + i}.", f"content_encoder.down.{i}.") for i in range(cfg.n_downsample)]
    first_block = 1 + cfg.n_downsample
    for j in range(n_res):
        rules += [(f"c_encoder.main.{first_block + j}.main.0.", f"content_encoder.blocks.{j}.conv1."),
                  (f"c_encoder.main.{first_block + j}.main.1.", f"content_encoder.blocks.{j}.conv2.")]
    n_shared = 1 + cfg.n_downsample
    rules += [(f"s_encoder.shared.{i}.", f"style_encoder.convs.{i}.") for i in range(n_shared)]
    rules += [(f"s_encoder.foreground.{i}.", f"style_encoder.convs.{n_shared + i}.")
              for i in range(cfg.style_extra_downsample)]
    rules += [(f"s_encoder.foreground.{cfg.style_extra_downsample + 1}.", "style_encoder.out.")]
    rules += [(f"mask.main.{i}.", f"mask_net.convs.{i}.") for i in range(cfg.mask_blocks)]
    rules += [(f"mask.main.{cfg.mask_blocks}.", "mask_net.out."),
              ("mask.co_attn.main.0.fc.", "mask_net.attention_in."),
              ("mask.co_attn.main.1.fc.", "mask_net.attention_out.")]
    for j in range(n_res):
        rules += [(f"decoder.main.{j}.main.0.", f"decoder.blocks.{j}.conv1."),
                  (f"decoder.main.{j}.main.1.", f"decoder.blocks.{j}.conv2.")]
    rules += [(f"decoder.main.{n_res + 2 * i + 1}.", f"decoder.up.{i}.") for i in range(cfg.n_downsample)]
    rules += [(f"decoder.main.{n_res + 2 * cfg.n_downsample}.", "decoder.out.")]
    for official, ours in (("f_mlp", "mlp_fg"), ("b_mlp", "mlp_bg")):
        rules += [(f"decoder.{official}.main.{i}.fc.", f"decoder.{ours}.hidden.{i}.")
                  for i in range(cfg.mlp_blocks + 1)]
        rules += [(f"decoder.{official}.main.{cfg.mlp_blocks + 1}.fc.", f"decoder.{ours}.out.")]
    return rules


def _discriminator_rules(cfg: LOMITConfig) -> list[tuple[str, str]]:
    rules = [(f"main.{i}.", f"trunk.{i}.") for i in range(cfg.d_layers)]
    return rules + [("conv1.", "src."), ("conv2.", "cls.")]


def _rename(state: dict[str, torch.Tensor], rules, what: str) -> dict[str, torch.Tensor]:
    renamed, unknown = {}, []
    for key, value in state.items():
        for official, ours in rules:
            if key.startswith(official):
                renamed[ours + key[len(official):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"official {what} keys with no counterpart: {', '.join(unknown[:5])}"
                         + (f" ... ({len(unknown)} in all)" if len(unknown) > 5 else ""))
    return renamed


_IN_RUNNING = re.compile(r"^content_encoder\..*\.norm\.(running_mean|running_var|num_batches_tracked)$")


def is_running_instance_stat(key: str) -> bool:
    """A generator key holding the content encoder's running IN statistics (compat="official" only)."""
    return bool(_IN_RUNNING.match(key))


def convert_official_state_dict(generator_state: dict[str, torch.Tensor], cfg: LOMITConfig,
                                discriminator_state: dict[str, torch.Tensor] | None = None):
    """Rename official state dicts onto LOMITGenerator / LOMITDiscriminator keys.

    The official style encoder's foreground and background heads are one module; its background copy is
    checked to be identical and dropped. With cfg.compat == "paper" the content encoder's running
    instance-norm statistics are dropped (the paper normalises every instance by its own statistics).
    Returns (generator_state, discriminator_state or None).
    """
    state = dict(generator_state)
    for key in [k for k in state if k.startswith("s_encoder.background.")]:
        twin = "s_encoder.foreground." + key[len("s_encoder.background."):]
        if twin not in state or not torch.equal(state[twin], state[key]):
            raise ValueError(f"official style encoder heads differ at {key}; lmt_fast shares them "
                             "(as the official code does)")
        del state[key]
    converted = _rename(state, _generator_rules(cfg), "generator")
    if cfg.compat == "paper":
        converted = {k: v for k, v in converted.items() if not is_running_instance_stat(k)}
    disc = None
    if discriminator_state is not None:
        disc = _rename(dict(discriminator_state), _discriminator_rules(cfg), "discriminator")
    return converted, disc


def _count(state: dict, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.match(k))})


def infer_official_config(generator_state: dict[str, torch.Tensor],
                          discriminator_state: dict[str, torch.Tensor] | None = None,
                          attributes=None, image_size: int | None = None, compat: str = "official") -> LOMITConfig:
    """Read the constructor arguments of an official checkpoint off its tensor shapes."""
    try:
        conv_dim = generator_state["c_encoder.main.0.conv.weight"].shape[0]
        style_dim = generator_state["decoder.f_mlp.main.0.fc.weight"].shape[1]
        mlp_dim = generator_state["decoder.f_mlp.main.0.fc.weight"].shape[0]
    except KeyError as exc:
        raise ValueError(f"not an official LOMIT generator state dict (no {exc.args[0]})") from None
    repeat_num = 2 * _count(generator_state, r"^c_encoder\.main\.(\d+)\.main\.")
    kwargs = dict(conv_dim=conv_dim, repeat_num=repeat_num, style_dim=style_dim, mlp_dim=mlp_dim, compat=compat)
    n_attr = None
    if discriminator_state is not None:
        d_layers = _count(discriminator_state, r"^main\.(\d+)\.")
        cls_weight = discriminator_state["conv2.weight"]
        n_attr = cls_weight.shape[0]
        kwargs.update(d_conv_dim=discriminator_state["main.0.conv.weight"].shape[0], d_repeat_num=d_layers,
                      image_size=cls_weight.shape[-1] * 2 ** d_layers)
        if image_size is not None and image_size != kwargs["image_size"]:
            raise ValueError(f"image_size {image_size} does not match the discriminator's ({kwargs['image_size']})")
    elif image_size is not None:
        kwargs["image_size"] = image_size
    if attributes is not None:
        if n_attr is not None and len(attributes) != n_attr:
            raise ValueError(f"{len(attributes)} attribute names given, the discriminator has {n_attr} outputs")
        kwargs["attributes"] = tuple(attributes)
    elif n_attr is not None and n_attr != len(DEFAULT_ATTRIBUTES):
        kwargs["attributes"] = tuple(f"attribute_{i}" for i in range(n_attr))
    return official_config(**kwargs)
