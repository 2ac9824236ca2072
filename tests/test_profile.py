import math

import pytest

from augment.profiling import profile
from data.errors import InputError


@pytest.fixture(scope="module")
def measured():
    return profile(seconds=0.3)


def test_rates_are_measured(measured):
    rates = (measured.train_images_per_s, measured.tutorial_images_per_s, measured.peak_gflop_per_s,
             measured.generate_images_per_s, measured.forward_images_per_s, measured.classify_images_per_s,
             measured.train_gflop_per_image)
    assert all(math.isfinite(r) and r > 0 for r in rates)
    assert measured.device == "cpu" and measured.threads >= 1


def test_ratios_come_from_the_rates(measured):
    p = measured
    assert p.train_speedup == pytest.approx(p.train_images_per_s / p.tutorial_images_per_s)
    assert p.train_gflop_per_s == pytest.approx(p.train_gflop_per_image * p.train_images_per_s)
    assert 0 < p.peak_fraction <= 1.5
    assert p.peak_fraction == pytest.approx(p.train_gflop_per_s / p.peak_gflop_per_s)
    pipeline_time, forward_time = 1 / p.generate_images_per_s, 1 / p.forward_images_per_s  # per image, same images
    assert p.generate_overhead == pytest.approx(pipeline_time / forward_time - 1)
    assert p.generate_overhead > -1


def test_flops_are_those_of_a_dcgan_step(measured):
    """Forward + backward of D (real and fake) and G: several MFLOP per 28x28 image, not a stray op."""
    assert 1e-3 < measured.train_gflop_per_image < 1


def test_lines_mention_every_figure(measured):
    text = "\n".join(measured.lines())
    p = measured
    for figure in (f"{p.train_images_per_s:,.0f}", f"{p.tutorial_images_per_s:,.0f}", f"{p.train_speedup:.2f}x",
                   f"{p.train_gflop_per_s:.1f} GFLOP/s", f"{p.peak_fraction:.1%}", f"{p.peak_gflop_per_s:.1f}",
                   f"{p.generate_images_per_s:,.0f}", f"{p.forward_images_per_s:,.0f}", f"{p.generate_overhead:.1%}",
                   f"{p.classify_images_per_s:,.0f}", f"{p.threads} threads"):
        assert figure in text


def test_bad_input_fails_before_work():
    with pytest.raises(InputError, match="seconds"):
        profile(seconds=0)
    with pytest.raises(InputError, match="device"):
        profile(device="tpu")
