"""Registry and checkpoint loading: zoo-format files, inference of N/M and architecture,
sha256 checks, corrupt files, frozen models."""

from __future__ import annotations

import hashlib

import pytest
import torch

from pipeline.errors import (
    ConfigError,
    CorruptWeightsError,
    UnknownModelError,
    WeightsMismatchError,
)
from pipeline.models import (
    ARCHITECTURES,
    entropy_tables_sha256,
    get_architecture,
    infer_architecture,
    load_model,
    zoo_lambda,
)

ARCHS = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"]


def zoo_checkpoint(tmp_path, arch: str, N: int = 24, M: int = 40, wrap: bool = False):
    """A checkpoint file in CompressAI's zoo format (a bare state_dict of a model)."""
    torch.manual_seed(1)
    net = get_architecture(arch).model_class()(N=N, M=M)
    net.update(force=True)
    sd = net.state_dict()
    if wrap:  # what training scripts save: {"state_dict": {"module.x": ...}}
        sd = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}
    path = tmp_path / f"{arch}.pth.tar"
    torch.save(sd, path)
    return path


def test_registry_has_stable_ids() -> None:
    assert set(ARCHS) <= set(ARCHITECTURES)
    assert get_architecture("mbt2018-mean").kind == "mean-scale-hyperprior"
    with pytest.raises(UnknownModelError, match="choose one of: bmshj2018-factorized"):
        get_architecture("cheng2021-nope")
    assert zoo_lambda(3) == 0.0067
    with pytest.raises(ConfigError, match=r"1\.\.8"):
        zoo_lambda(9)


@pytest.mark.parametrize("arch", ARCHS)
def test_load_zoo_checkpoint_infers_arch_and_sizes(tmp_path, arch: str) -> None:
    path = zoo_checkpoint(tmp_path, arch)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    m = load_model(checkpoint=str(path), quality=3)
    assert m.arch.id == arch
    assert (m.N, m.M) == (24, 40)
    assert m.identity.weights_sha256 == digest
    assert m.identity.lmbda == 0.0067
    assert not m.net.training
    assert all(not p.requires_grad for p in m.net.parameters())
    assert m.identity.tables_sha256 == entropy_tables_sha256(m.net)
    # file:// URIs and the explicit architecture give the same model
    m2 = load_model(arch, 3, f"file://{path}", expected_sha256=digest)
    assert m2.identity == m.identity


def test_wrapped_training_checkpoint_loads(tmp_path) -> None:
    path = zoo_checkpoint(tmp_path, "mbt2018-mean", wrap=True)
    assert load_model(checkpoint=str(path)).arch.id == "mbt2018-mean"


def test_infer_architecture_rejects_autoregressive() -> None:
    sd = {
        "g_a.0.weight": torch.zeros(1),
        "h_a.0.weight": torch.zeros(1),
        "context_prediction.weight": torch.zeros(1),
    }
    with pytest.raises(UnknownModelError, match="autoregressive"):
        infer_architecture(sd)


def test_sha256_mismatch_is_refused(tmp_path) -> None:
    path = zoo_checkpoint(tmp_path, "bmshj2018-factorized")
    with pytest.raises(WeightsMismatchError, match="expected 0000000000000000"):
        load_model(checkpoint=str(path), expected_sha256="0" * 64)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "not_a_state_dict"])
def test_corrupt_weights_give_a_clear_error(tmp_path, damage: str) -> None:
    path = zoo_checkpoint(tmp_path, "bmshj2018-factorized")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x80\x02not a pickle at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(CorruptWeightsError, match=str(path)):
        load_model("bmshj2018-factorized", checkpoint=str(path))


def test_wrong_architecture_for_weights(tmp_path) -> None:
    path = zoo_checkpoint(tmp_path, "bmshj2018-factorized")
    with pytest.raises(CorruptWeightsError, match="does not match architecture mbt2018-mean"):
        load_model("mbt2018-mean", checkpoint=str(path))


def test_missing_checkpoint(tmp_path) -> None:
    from pipeline.errors import ObjectNotFoundError

    with pytest.raises(ObjectNotFoundError, match=r"nope\.pth"):
        load_model("bmshj2018-factorized", checkpoint=str(tmp_path / "nope.pth"))


# --------------------------------------------------------------------------- midpoints


def test_a_midpoint_rate_point_is_the_mean_of_its_shipped_neighbours() -> None:
    from pipeline.models import (
        find_card,
        midpoint_state_dict,
        rate_point_qualities,
        shipped_qualities,
    )

    arch = "bmshj2018-factorized"
    if shipped_qualities(arch) != [1, 2, 3, 4, 5]:
        pytest.skip("the shipped rate points are not q1..q5 in this checkout")
    # every shipped quality and the midpoints, lowest first, at most 8 (the packets' slots)
    assert rate_point_qualities(arch) == [1, 1.5, 2, 2.5, 3, 3.5, 4, 5]
    from pipeline.bitstream.schema import MAX_RATE_POINTS
    from pipeline.models import MAX_RATE_POINTS as RATE_CONTROL_POINTS

    assert RATE_CONTROL_POINTS == MAX_RATE_POINTS == 8
    lo, hi, mid = load_model(arch, 2), load_model(arch, 3), load_model(arch, 2.5)
    assert mid.identity.quality == 2.5 and mid.card["midpoint_of"] == [2, 3]
    assert mid.identity.lmbda == pytest.approx((0.0035 * 0.0067) ** 0.5)
    assert find_card(arch, 2)["lambda"] < mid.identity.lmbda < find_card(arch, 3)["lambda"]
    # every weight: float32 of the exact float64 mean (the same bits on every machine)
    a, b, m = (x.net.state_dict() for x in (lo, hi, mid))
    for k in ("g_a.0.weight", "g_s.0.bias", "entropy_bottleneck.matrices.0"):
        want = ((a[k].double() + b[k].double()) / 2).float()
        assert torch.equal(m[k], want) and not torch.equal(m[k], a[k])
    assert midpoint_state_dict({"w": a["g_a.0.weight"]}, {"w": b["g_a.0.weight"]})["w"].dtype == (
        torch.float32
    )
    # identified by its contents; loading it again is the same model and tables
    again = load_model(arch, 2.5)
    assert again.identity == mid.identity
    shas = {lo.identity.weights_sha256, hi.identity.weights_sha256, mid.identity.weights_sha256}
    assert len(shas) == 3 and mid.identity.tables_sha256 != lo.identity.tables_sha256
    # a pinned digest (an actor's) is checked as for shipped weights
    pinned = load_model(arch, 2.5, expected_sha256=mid.identity.weights_sha256)
    assert pinned.identity == mid.identity
    with pytest.raises(WeightsMismatchError, match=r"midpoint of .* expected"):
        load_model(arch, 2.5, expected_sha256=lo.identity.weights_sha256)


def test_a_quality_that_is_no_rate_point_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"quality 2\.25 is neither a shipped quality nor a midpoint"
    ):
        load_model("bmshj2018-factorized", 2.25)
    with pytest.raises(
        UnknownModelError, match=r"no midpoint q5\.5 .* needs the shipped q5 and q6"
    ):
        load_model("bmshj2018-factorized", 5.5)


def test_a_header_lists_several_rate_points_or_a_midpoint_alone() -> None:
    from pipeline.models import ModelIdentity, listed_rate_points

    def ident(q: float) -> ModelIdentity:
        return ModelIdentity("bmshj2018-factorized", q, 0.001 * q, f"w{q}", f"t{q}")

    two = (ident(2), ident(2.5))
    assert listed_rate_points(two[0], two) == two
    assert listed_rate_points(ident(3), ()) == () == listed_rate_points(ident(3), (ident(3),))
    assert listed_rate_points(ident(2.5), ()) == (ident(2.5),)
