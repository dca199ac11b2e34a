"""The operator's configuration from its environment."""

from __future__ import annotations

import pytest

from lameduck_operator.config import ConfigError, load_config


def test_reconcile_workers_default_to_eight_and_follow_the_environment() -> None:
    assert load_config({}).reconcile_workers == 8
    assert load_config({"LAMEDUCK_RECONCILE_WORKERS": "16"}).reconcile_workers == 16


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_reconcile_workers_out_of_range_are_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="LAMEDUCK_RECONCILE_WORKERS"):
        load_config({"LAMEDUCK_RECONCILE_WORKERS": value})
