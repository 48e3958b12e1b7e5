"""Parameter / MAC fidelity of the seed-002 networks against the thesis' Tables 4.2 and 4.3.

For all 21 configurations (7 networks x top/default/bottom) builds the model at the paper's
input size (2D 256 x 256 x 9, 3D 8 x 256 x 256 x 1), counts trainable parameters and
multiply-accumulates the way ptflops counts (:mod:`tfmedseg.models.flops`) and prints them next
to the thesis' figures with ratios (ours / thesis). The default rows must be within 3 %
(parameters) and 5 % (MACs); ``tests/models/test_flops.py`` asserts that.

With ``--appendix`` it also prints the Appendix A arithmetic per row: the parameters and MACs of
the encoder alone (the ``encoder_l*`` layers, which follow the Appendix A tables block by block),
and what the thesis' total leaves for stem + head + decoder + output (thesis - encoder). For the
default rows that rest is small (2D MobileNetV2: 3.76M - 3.60M = 0.16M); for several top/bottom rows
it is negative or several times larger, i.e. Tables 4.2/4.3 and Appendix A disagree (e.g. 2D
MobileNetV2 top: Appendix A's encoder has about 2.70M parameters, Table 4.2 says 4.64M in all).
``docs/experiments.md`` ("Parameter counts: ours, Tables 4.2/4.3 and Appendix A") holds the table.

Usage:
    python benchmarks/bench_efficient_fidelity.py [--size 256] [--appendix]

``--size`` changes H = W (a multiple of 128); MACs then no longer compare with the tables.
"""

from __future__ import annotations

import argparse
import time

import tfmedseg  # noqa: F401  (before TensorFlow: oneDNN on)
from tfmedseg.models import registry
from tfmedseg.models.flops import model_complexity

# (builder, variant) -> (MMACs, M params) from Table 4.2 (2D, 9 x 256 x 256) and Table 4.3
# (3D, 8 x 256 x 256). Table 4.3 prints the 3D MobileNet-V2 default as "1.59" without unit.
THESIS = {
    ("mobilenetv2_2d", "top"): (107.14, 4.64), ("mobilenetv2_2d", "default"): (123.89, 3.76),
    ("mobilenetv2_2d", "bottom"): (104.80, 6.37),
    ("mobilenetv3_2d", "top"): (103.01, 4.47), ("mobilenetv3_2d", "default"): (113.72, 3.64),
    ("mobilenetv3_2d", "bottom"): (103.06, 7.80),
    ("shufflenetv2_2d", "top"): (118.93, 1.44), ("shufflenetv2_2d", "default"): (122.31, 1.29),
    ("shufflenetv2_2d", "bottom"): (122.13, 1.47),
    ("mobilenetv2_3d", "top"): (64.28, 1.26), ("mobilenetv2_3d", "default"): (61.69, 1.59),
    ("mobilenetv2_3d", "bottom"): (64.03, 2.93),
    ("mobilenetv3_3d", "top"): (67.25, 0.99), ("mobilenetv3_3d", "default"): (62.44, 1.95),
    ("mobilenetv3_3d", "bottom"): (64.78, 3.29),
    ("shufflenetv2_3d", "top"): (68.84, 1.33), ("shufflenetv2_3d", "default"): (61.53, 1.59),
    ("shufflenetv2_3d", "bottom"): (56.37, 1.95),
    ("dsts_3d", "top"): (66.99, 1.68), ("dsts_3d", "default"): (61.22, 2.52),
    ("dsts_3d", "bottom"): (55.19, 2.88),
}
NETWORKS = ("mobilenetv2_2d", "mobilenetv3_2d", "shufflenetv2_2d", "mobilenetv2_3d", "mobilenetv3_3d",
            "shufflenetv2_3d", "dsts_3d")
PARAM_TOLERANCE = 0.03
MAC_TOLERANCE = 0.05


def measure(network: str, variant: str, size: int = 256, encoder: bool = False) -> tuple[float, ...]:
    """(MMACs, M params) of one configuration at ``size x size`` in-plane; with ``encoder`` also
    (MMACs, M params) of the encoder alone (the Appendix A layers)."""
    shape = (size, size, 9) if network.endswith("_2d") else (8, size, size, 1)
    report = model_complexity(registry.build(network, variant=variant, input_shape=shape))
    out = (report.macs / 1e6, report.params / 1e6)
    if encoder:
        enc_macs, enc_params = report.by_prefix("encoder_")
        out += (enc_macs / 1e6, enc_params / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="in-plane size H = W (default 256)")
    parser.add_argument("--appendix", action="store_true",
                        help="also print the encoder alone (Appendix A arithmetic) and thesis - encoder")
    args = parser.parse_args()
    header = f"{'network':<16} {'variant':<8} {'MMACs':>8} {'thesis':>8} {'ratio':>6}   {'Mparams':>8} " \
             f"{'thesis':>7} {'ratio':>6}  check"
    if args.appendix:
        header += f"  {'enc Mparams':>11} {'thesis-enc':>10} {'enc MMACs':>9}"
    print(header)
    print("-" * len(header))
    start = time.perf_counter()
    failures = 0
    for network in NETWORKS:
        for variant in ("top", "default", "bottom"):
            macs, params, *enc = measure(network, variant, args.size, encoder=args.appendix)
            t_macs, t_params = THESIS[(network, variant)]
            r_macs, r_params = macs / t_macs, params / t_params
            check = ""
            if variant == "default":
                ok = abs(r_params - 1) <= PARAM_TOLERANCE and abs(r_macs - 1) <= MAC_TOLERANCE
                check = "ok" if ok else "FAIL"
                failures += not ok
            line = (f"{network:<16} {variant:<8} {macs:8.2f} {t_macs:8.2f} {r_macs:6.3f}   {params:8.3f} "
                    f"{t_params:7.2f} {r_params:6.3f}  {check:<5}")
            if enc:
                line += f"  {enc[1]:11.3f} {t_params - enc[1]:10.3f} {enc[0]:9.2f}"
            print(line)
    print(f"\n{failures} default configuration(s) outside {PARAM_TOLERANCE:.0%} params / {MAC_TOLERANCE:.0%} "
          f"MACs; {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
