"""Run-config defaults that depend on the rest of the config."""

from __future__ import annotations

import pytest

from core.config import PRETRAINED_LR, DataConfig, OptimConfig, RunConfig, TransformerConfig
from core.data.records import InputSpec
from core.encoders import build_model


@pytest.mark.parametrize(
    ("config", "lr"),
    [
        ({"data": {"modality": "text"}}, PRETRAINED_LR),
        ({"data": {"modality": "text"}, "optim": {"name": "sgd"}}, PRETRAINED_LR),
        ({"data": {"modality": "text"}, "model": {"kind": "transformer", "max_length": 64}}, PRETRAINED_LR),
        ({"data": {"modality": "text"}, "model": {"max_length": 64}}, PRETRAINED_LR),
        ({"data": {"modality": "text"}, "optim": {"lr": 0.01}}, 0.01),
        ({"data": {"modality": "text"}, "model": {"kind": "transformer", "backbone": "tiny-random-bert"}}, 1e-3),
        ({"data": {"modality": "image"}}, 1e-3),
        ({"data": {"modality": "vectors"}}, 1e-3),
    ],
    ids=["text", "text-sgd", "text-model-given", "text-no-kind", "text-lr", "random-bert", "image", "vectors"],
)
def test_fine_tuning_a_pretrained_transformer_defaults_to_a_small_learning_rate(config, lr) -> None:
    """bench/text_lr.py: 1e-3 unlearns what all-MiniLM-L6-v2 knows; the stored config shows the rate used."""
    run = RunConfig.model_validate(config)
    assert run.optim.lr == lr
    assert RunConfig.model_validate(run.model_dump()) == run  # a stored config reads back the same
    assert OptimConfig().lr == 1e-3


def test_the_same_default_holds_when_the_config_is_built_from_objects() -> None:
    data, model = DataConfig(modality="text"), TransformerConfig()
    assert RunConfig(data=data, model=model).optim.lr == PRETRAINED_LR
    assert RunConfig(data=data, model=model, optim=OptimConfig(name="sgd")).optim.lr == PRETRAINED_LR
    assert RunConfig(data=data, model=model, optim=OptimConfig(lr=1e-3)).optim.lr == 1e-3  # set: kept
    assert RunConfig(data=data, model=TransformerConfig(backbone="tiny-random-bert")).optim.lr == 1e-3


def test_a_section_given_without_its_kind_takes_the_one_that_fits_the_modality() -> None:
    """{"model": {"max_length": 64}} is the text model with a shorter length, not a 422 about a discriminator."""
    text = RunConfig.model_validate({"data": {"modality": "text"}, "model": {"max_length": 64},
                                     "augment": {"mode": "dropout"}})  # fmt: skip
    assert (text.model.kind, text.model.max_length, text.augment.kind) == ("transformer", 64, "text")
    vectors = RunConfig.model_validate({"data": {"modality": "vectors"}, "augment": {"noise_std": 0.5}})
    assert (vectors.model.kind, vectors.augment.kind, vectors.augment.noise_std) == ("mlp", "vectors", 0.5)
    with pytest.raises(ValueError, match="model.kind 'mlp' does not fit data.modality 'text'"):
        RunConfig.model_validate({"data": {"modality": "text"}, "model": {"kind": "mlp"}})  # a kind given is kept
    with pytest.raises(ValueError, match="max_length"):  # a field of another kind is still refused by name
        RunConfig.model_validate({"data": {"modality": "image"}, "model": {"max_length": 64}})


def test_a_batch_that_the_devices_cannot_share_equally_is_refused_with_the_config() -> None:
    """Before, the job was accepted and failed in the worker; now the submission's 422 says it."""
    with pytest.raises(ValueError, match="train.batch_size 17 must be divisible by train.num_devices 2"):
        RunConfig.model_validate({"data": {"modality": "vectors"}, "train": {"batch_size": 17, "num_devices": 2}})
    assert RunConfig.model_validate({"data": {"modality": "vectors"}, "train": {"batch_size": 18, "num_devices": 2}})


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"loss": {"variant": "ntxent", "tau_plus": 0.1}}, "loss.tau_plus applies to the 'debiased' and 'hard'"),
        ({"loss": {"variant": "dcl", "tau_plus": 0.05}}, "loss.tau_plus applies to the 'debiased' and 'hard'"),
        ({"loss": {"tau_plus": 0.1}}, "loss.tau_plus applies"),  # the default variant, ntxent
        ({"loss": {"variant": "debiased", "beta": 2.0}}, "loss.beta applies to the 'hard' variant"),
        ({"optim": {"momentum": 0.5}}, "optim.momentum applies to 'sgd' and 'lars'"),
    ],
    ids=["tau-plus-ntxent", "tau-plus-dcl", "tau-plus-default", "beta-debiased", "momentum-adamw"],
)
def test_an_option_the_chosen_variant_ignores_is_refused(section, message) -> None:
    """Each of these was accepted and had no effect: a user who set ``tau_plus`` on NT-Xent believed the loss
    debiased; an unknown field is refused, and so is one that does nothing here."""
    with pytest.raises(ValueError, match=message):
        RunConfig.model_validate({"data": {"modality": "vectors"}, **section})


def test_the_options_each_variant_uses_are_accepted_and_stored_configs_read_back() -> None:
    for section in ({"loss": {"variant": "debiased", "tau_plus": 0.1}}, {"loss": {"variant": "hard", "tau_plus": 0.1,
                    "beta": 2.0}}, {"optim": {"name": "sgd", "momentum": 0.5}}, {"loss": {"variant": "dcl"}}):  # fmt: skip
        run = RunConfig.model_validate({"data": {"modality": "vectors"}, **section})
        assert RunConfig.model_validate(run.model_dump()) == run  # the defaults a stored config spells out pass


# each section's fields, with another value: those of WEIGHTS change the shapes of the model's weights, the others not
OTHER_VALUES = {
    "mlp": {"hidden_dim": 64, "num_layers": 3, "output_dim": 32, "dropout": 0.3},
    "resnet": {"width": 8, "blocks": (1, 1), "image_size": 16},
    "transformer": {"backbone": "all-MiniLM-L6-v2", "max_length": 32, "pooling": "cls"},
    "head": {"projection_dim": 16, "hidden_dim": 24, "serve": "projection"},
}
BASES = {
    "mlp": ("vectors", {"kind": "mlp"}, InputSpec("vectors", features=6)),
    "resnet": ("image", {"kind": "resnet", "width": 4, "blocks": [1, 1, 1]}, InputSpec("image", channels=1)),
    "transformer": ("text", {"kind": "transformer", "backbone": "tiny-random-bert"}, InputSpec("text")),
}


def _shapes(config: RunConfig, spec: InputSpec) -> dict[str, tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in build_model(config, spec).state_dict().items()}


@pytest.mark.parametrize("kind", list(BASES))
def test_the_fields_said_to_shape_the_weights_are_those_that_do(kind) -> None:
    """A job that starts from a registered model is refused where its config differs from the model's in
    ``weight_fields`` (api/jobs/service.py), and takes any other field as its own: each field of the model and head
    sections is changed here, and the model built again, to see that exactly those fields change the weights'
    shapes (a field added later fails here until it is put on one side or the other)."""
    modality, model, spec = BASES[kind]
    base = RunConfig.model_validate({"data": {"modality": modality}, "model": model, "head": {"hidden_dim": 8}})
    shapes = _shapes(base, spec)
    sections = {"model": type(base.model), "head": type(base.head)}
    for section, cls in sections.items():
        values = OTHER_VALUES[kind if section == "model" else "head"]
        assert set(values) == set(cls.model_fields) - {"kind"}, f"{cls.__name__}: every field, and only those"
        for field, value in values.items():
            changed = base.model_copy(update={section: getattr(base, section).model_copy(update={field: value})})
            assert (_shapes(changed, spec) != shapes) == (field in cls.WEIGHTS), f"{section}.{field}"
            assert (changed.weight_fields() != base.weight_fields()) == (field in cls.WEIGHTS), f"{section}.{field}"
    if kind == "mlp":  # dropout shapes them by being on: another rate, on, leaves them alone
        on, other = (base.model_copy(update={"model": base.model.model_copy(update={"dropout": rate})})
                     for rate in (0.1, 0.3))  # fmt: skip
        assert _shapes(on, spec) == _shapes(other, spec) != shapes and on.weight_fields() == other.weight_fields()


def test_early_stopping_without_evaluations_is_refused() -> None:
    with pytest.raises(ValueError, match="train.early_stop_patience needs evaluations: set data.val_fraction above 0"):
        RunConfig.model_validate(
            {"data": {"modality": "vectors", "val_fraction": 0}, "train": {"early_stop_patience": 2}}
        )
