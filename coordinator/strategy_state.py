"""What a Flower strategy keeps between rounds, as named arrays a checkpoint can hold.

Of Flower 1.42's strategies that a run may name (``coordinator.flower_strategies.STRATEGIES``),
only the server optimizers carry state from one round to the next:

- FedAdam, FedYogi (``m_t``, ``v_t``) and FedAdagrad (``m_t`` is kept but recomputed from
  nothing else; ``v_t`` accumulates): dicts of arrays keyed by the model's array names;
- FedAvgM: ``momentum_vector``, a list in the model's array order (None with zero momentum).

``current_arrays`` (FedOpt, FedAvgM) is not state here: the adapter sets it to zeros before
every aggregation (:func:`coordinator.rules.prime_reference`). FedAvg,
FedProx, FedMedian, FedTrimmedAvg, Krum, MultiKrum and Bulyan keep nothing between rounds;
``tests/coordinator/test_strategy_state.py`` runs every strategy for rounds and checks that
no other attribute changes, so a Flower upgrade that adds state fails there, not silently.

A slot is all-or-nothing: either every model array name is present under its prefix
(``m_t/layer0.weight``, ...) or none is (Flower's ``None``: not started yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedYogi, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

SEPARATOR = "/"


class StrategyStateError(ValueError):
    """Saved strategy state does not fit the strategy and model it is restored into."""


def state_slots(strategy: Strategy) -> tuple[str, ...]:
    """Return the names of the state slots ``strategy`` keeps between rounds (may be empty)."""
    if isinstance(strategy, FedAdam | FedYogi | FedAdagrad):
        return ("m_t", "v_t")
    if isinstance(strategy, FedOpt):  # a FedOpt subclass we do not know: its state is unknown
        raise StrategyStateError(f"{type(strategy).__name__}: no checkpoint support")
    if isinstance(strategy, FedAvgM):
        return ("momentum",)
    return ()


def capture(strategy: Strategy, array_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Return the strategy's between-rounds state as ``{"slot/array_name": array}`` (copies).

    Parameters
    ----------
    strategy : the Flower strategy (not the adapter).
    array_names : the model's array names, in the model's order (FedAvgM keeps a list).
    """
    state: dict[str, np.ndarray] = {}
    for slot in state_slots(strategy):
        arrays = _slot_arrays(strategy, slot, array_names)
        if arrays is None:
            continue
        for name, array in arrays.items():
            state[f"{slot}{SEPARATOR}{name}"] = np.array(array, copy=True)
    return state


def restore(
    strategy: Strategy,
    state: Mapping[str, np.ndarray],
    array_shapes: Mapping[str, tuple[int, ...]],
) -> None:
    """Put ``state`` (from :func:`capture`) back into ``strategy``.

    Raises
    ------
    StrategyStateError
        For a name that belongs to no slot of this strategy, a slot with some of the model's
        arrays missing, or an array of another shape or a non-float dtype.
    """
    slots = state_slots(strategy)
    by_slot: dict[str, dict[str, np.ndarray]] = {}
    for key, array in state.items():
        slot, sep, name = key.partition(SEPARATOR)
        if not sep or slot not in slots or name not in array_shapes:
            raise StrategyStateError(
                f"state array {key!r} does not belong to {type(strategy).__name__} with arrays "
                f"{sorted(array_shapes)} (expected SLOT/NAME, slots {list(slots)})"
            )
        if tuple(array.shape) != tuple(array_shapes[name]):
            raise StrategyStateError(
                f"state array {key!r}: shape {tuple(array.shape)}, expected "
                f"{tuple(array_shapes[name])}"
            )
        if array.dtype not in (np.float32, np.float64):
            raise StrategyStateError(f"state array {key!r}: dtype {array.dtype}, expected float")
        by_slot.setdefault(slot, {})[name] = array
    for slot, arrays in by_slot.items():
        missing = sorted(set(array_shapes) - set(arrays))
        if missing:
            raise StrategyStateError(f"state slot {slot!r} lacks the arrays {missing}")
    for slot in slots:
        _set_slot(strategy, slot, by_slot.get(slot), list(array_shapes))


def _slot_arrays(
    strategy: Strategy, slot: str, array_names: Sequence[str]
) -> dict[str, np.ndarray] | None:
    if slot == "momentum":
        vector = getattr(strategy, "momentum_vector", None)
        if vector is None:
            return None
        return dict(zip(array_names, vector, strict=True))
    arrays = getattr(strategy, slot, None)
    # Flower tests `if not self.m_t`: an empty dict is "not started" as None is.
    return dict(arrays) if arrays else None


def _set_slot(
    strategy: Strategy,
    slot: str,
    arrays: Mapping[str, np.ndarray] | None,
    array_names: Sequence[str],
) -> None:
    if slot == "momentum":
        strategy.momentum_vector = (  # type: ignore[attr-defined]
            None if arrays is None else [np.array(arrays[name]) for name in array_names]
        )
        return
    value = None if arrays is None else {name: np.array(arrays[name]) for name in array_names}
    setattr(strategy, slot, value)
