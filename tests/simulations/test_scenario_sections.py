"""simulations/scenario_sections.py: the simulation's sections are the one source of their keys.

coordinator/ may not import simulations/ (tests/test_layers.py), so coordinator/config.py keeps
its own lists of the data and fault keys it forwards; these tests keep them equal to the schema.
"""

from typing import get_args

from coordinator import config, schema
from simulations import faults
from simulations.scenario_sections import (
    ATTACKS,
    DEVICE_POLICIES,
    MODEL_KINDS,
    Attack,
    DataSection,
    DevicesSection,
    FaultsSection,
    ModelSection,
    SimulatedFederationSection,
)


def _flat_keys(section: type) -> list[str]:
    return list(schema.flat_settings((section,)))


def test_the_coordinators_data_keys_are_the_data_sections_flat_keys():
    simulation_only = set(_flat_keys(SimulatedFederationSection)) - set(
        _flat_keys(schema.FederationSection)
    )
    assert simulation_only == {"num-partitions"}
    assert sorted(config.DATA_KEYS) == sorted([*_flat_keys(DataSection), "num-partitions"])
    assert len(set(config.DATA_KEYS)) == len(config.DATA_KEYS)


def test_the_coordinators_fault_keys_are_the_faults_sections_flat_keys():
    assert config.FAULT_KEYS == tuple(_flat_keys(FaultsSection)) == faults.FAULT_KEYS
    assert all(key.startswith("faults-") for key in config.FAULT_KEYS)


def test_each_choice_list_is_its_literal():
    assert ATTACKS == get_args(Attack) == faults.ATTACKS
    assert "labelflip" in ATTACKS
    assert MODEL_KINDS == ("logreg", "mlp")
    assert DEVICE_POLICIES == ("none", "drop", "partial")
    assert FaultsSection(attack="noise").attack == "noise"
    assert ModelSection(kind="mlp", hidden=[3]).hidden == (3,)
    assert DevicesSection(policy="drop").policy == "drop"
