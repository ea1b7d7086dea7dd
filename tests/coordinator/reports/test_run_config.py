"""coordinator/reports/run_config.py: the report's run config keeps its integers integers."""

import json
import math

from coordinator.reports.report_json import parse_report, report_to_json
from coordinator.reports.run_config import copy_run_config, run_config, set_run_config
from protos.report_pb2 import RunReport

CONFIG = {
    "scenario": "digits",
    "seed": 7,
    "num-rounds": 5,
    "lr": 0.05,
    "server-lr": 1.0,  # a float that happens to be whole stays a float
    "max-delta-norm": math.inf,
    "meter-fuel": True,
    "huge": 2**60 + 1,  # not exact as a double
    "negative": -3,
}


def test_integers_come_back_as_integers_from_report_json():
    report = RunReport(scenario="digits")
    set_run_config(report, CONFIG)
    text = report_to_json(report)
    written = json.loads(text)["config"]
    assert written["num-rounds"] == 5 and type(written["num-rounds"]) is int
    assert type(written["seed"]) is int and written["negative"] == -3
    assert written["server-lr"] == 1.0 and type(written["server-lr"]) is float
    assert written["meter-fuel"] is True and written["max-delta-norm"] == "inf"
    assert written["huge"] == str(2**60 + 1)  # as text: a JSON reader would round the number
    read_back = run_config(parse_report(text))
    assert read_back == {**CONFIG, "max-delta-norm": "inf"}
    assert {key: type(value) for key, value in read_back.items()} == {
        "scenario": str,
        "seed": int,
        "num-rounds": int,
        "lr": float,
        "server-lr": float,
        "max-delta-norm": str,
        "meter-fuel": bool,
        "huge": int,
        "negative": int,
    }


def test_copy_and_replace_keep_the_integer_keys():
    source, target = RunReport(), RunReport()
    set_run_config(source, CONFIG)
    set_run_config(target, {"only": 1})
    copy_run_config(source, target)
    assert run_config(target) == run_config(source)
    set_run_config(target, {"lr": 0.1})
    assert run_config(target) == {"lr": 0.1} and list(target.config_integer_keys) == []


def test_a_report_without_config_and_an_older_report():
    assert run_config(RunReport()) == {}
    older = RunReport()
    older.config.update({"num-rounds": 5})  # written before config_integer_keys existed
    assert run_config(older) == {"num-rounds": 5.0}
