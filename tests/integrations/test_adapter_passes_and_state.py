"""Adapter specifics the contract suite does not cover: two Lightning callbacks in one checkpoint,
and the other evaluation passes (Lightning validate, Keras and transformers predict)."""

from __future__ import annotations

import pytest

from carbon_callbacks.ledger import Ledger
from tests.helpers.adapter_fits import DRIVERS

pytest.importorskip("torch")


def _driver(name, module):
    pytest.importorskip(module)
    return DRIVERS[name]()


def test_two_lightning_callbacks_keep_their_totals_apart_in_one_checkpoint(tmp_path):
    driver = _driver("lightning", "lightning.pytorch")
    a = driver.callback(prefix="a/", intensity=10.0)
    b = driver.callback(prefix="b/", intensity=1000.0)
    assert a.state_key != b.state_key
    driver.fit(tmp_path, a, epochs=2, checkpoint=True, extra=[b])
    co2 = (a.records[-1].co2_g_total, b.records[-1].co2_g_total)
    # Each measures with its own meter: their energies differ a little, their intensities 100x.
    assert co2[1] > 50 * co2[0]

    a2 = driver.callback(prefix="a/", intensity=10.0)
    b2 = driver.callback(prefix="b/", intensity=1000.0)
    driver.fit(tmp_path, a2, epochs=3, resume=True, extra=[b2])
    assert [r.epoch for r in a2.records] == [0, 1, 2] == [r.epoch for r in b2.records]
    assert a2.records[1].co2_g_total == pytest.approx(co2[0], rel=1e-9)
    assert b2.records[1].co2_g_total == pytest.approx(co2[1], rel=1e-9)


def test_a_lightning_checkpoint_from_before_the_state_key_still_resumes(tmp_path):
    import torch

    driver = _driver("lightning", "lightning.pytorch")
    first = driver.callback()
    driver.fit(tmp_path, first, epochs=2, checkpoint=True)
    path = tmp_path / "ckpt" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    # Older versions kept the state under the class name.
    checkpoint["callbacks"] = {"CarbonCallback": checkpoint["callbacks"][first.state_key]}
    torch.save(checkpoint, path)

    resumed = driver.callback()
    driver.fit(tmp_path, resumed, epochs=3, resume=True)
    assert [r.epoch for r in resumed.records] == [0, 1, 2]
    assert resumed.records[1].energy_kwh_total == pytest.approx(
        first.records[-1].energy_kwh_total, rel=1e-9)


def test_lightning_validate_after_fit_is_a_validate_run(tmp_path):
    driver = _driver("lightning", "lightning.pytorch")
    carbon = driver.callback(measure_eval=True)
    fit = driver.fit(tmp_path, carbon, epochs=1)
    trainer, module = fit.handle
    trainer.validate(module, driver._loaders()[1], verbose=False)
    fit_run, validate = Ledger.open().runs()
    assert (validate.kind, validate.parent_run) == ("validate", fit_run.run_id)
    [record] = Ledger.open().epochs(validate.run_id)
    assert record.metric("val_loss") is not None and record.energy_kwh > 0


def test_without_measure_eval_an_evaluation_pass_records_nothing(tmp_path):
    driver = _driver("keras", "keras")
    carbon = driver.callback()
    fit = driver.fit(tmp_path, carbon, epochs=1)
    driver.evaluate(fit)
    assert [r.kind for r in Ledger.open().runs()] == ["fit"] and carbon.passes == ()


@pytest.mark.parametrize(("name", "module"), [("keras", "keras"),
                                              ("transformers", "transformers")])
def test_predict_after_fit_is_a_predict_run(name, module, tmp_path):
    driver = _driver(name, module)
    carbon = driver.callback(measure_eval=True)
    fit = driver.fit(tmp_path, carbon, epochs=1)
    if name == "keras":
        fit.handle.predict(driver._data()[0], verbose=0, callbacks=[carbon])
    else:
        fit.handle.predict(fit.handle.eval_dataset)
    fit_run, predict = Ledger.open().runs()
    assert (predict.kind, predict.parent_run, predict.status) == (
        "predict", fit_run.run_id, "completed")
    assert [p.stage for p in carbon.passes] == ["predict"]
    assert carbon.passes[0].energy_kwh > 0


def test_a_keras_evaluation_pass_that_raises_is_recorded_failed_and_leaves_no_thread(tmp_path):
    import threading

    driver = _driver("keras", "keras")
    carbon = driver.callback(measure_eval=True)
    fit = driver.fit(tmp_path, carbon, epochs=1)

    def broken(data):
        raise RuntimeError("evaluation broke")

    fit.handle.test_step = broken
    with pytest.raises(RuntimeError, match="evaluation broke"):
        driver.evaluate(fit)
    _, evaluation = Ledger.open().runs()
    assert (evaluation.kind, evaluation.status, evaluation.error_type) == (
        "evaluate", "failed", "RuntimeError")
    assert [p.partial for p in carbon.passes] == [True]
    assert not [t for t in threading.enumerate() if t.name.startswith("carbon-callbacks-meter")]
    assert "test_function" not in vars(fit.handle) or (
        fit.handle.test_function.__name__ != "guarded")
