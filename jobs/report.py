"""Report job: (re)write a labelling run's review page, OUTPUT/_report.html.

    python -m jobs.report OUTPUT [--window-seconds 3]
    python -m jobs.report --smoke-test          # a synthetic run of 1000 tracks, then removed

The label job writes the page at the end of every run; this rebuilds it (after copying
results together, say, or from an older run). OUTPUT is a label job's results folder,
local or a URI. Open the page in a browser: the run's charts, and the review queue with a
genre picker whose "download corrections" saves corrections.csv (path,genre).
"""

from __future__ import annotations

import sys
import tempfile
import time

from jobs._cli import parser, run_main


def main(argv: list[str] | None = None) -> int:
    p = parser("jobs.report", __doc__.splitlines()[0])
    p.add_argument("output", nargs="?", help="the label job's results folder (local or URI)")
    p.add_argument(
        "--window-seconds",
        type=float,
        default=None,
        metavar="S",
        help="length of the first labelled window the players play: the model's segment "
        "(default 3, the feature config's; the label job uses its model's)",
    )
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="write a synthetic results folder of 1000 tracks, its page, then remove both",
    )
    args = p.parse_args(argv)

    def body() -> int:
        from genre.errors import ParameterError
        from genre.review_page import WINDOW_S, sample_results, write_page
        from jobs._cli import check_folder

        window_s = WINDOW_S if args.window_seconds is None else args.window_seconds
        if not window_s > 0:
            raise ParameterError(f"--window-seconds={window_s} must be positive")
        started = time.perf_counter()
        if args.smoke_test:
            with tempfile.TemporaryDirectory(prefix="genre-report-smoke-") as scratch:
                flagged = sample_results(f"{scratch}/labels", tracks=1000)
                page = write_page(f"{scratch}/labels", window_s=window_s)
                print(
                    f"report: {page} for 1000 synthetic tracks ({flagged} to review) in "
                    f"{time.perf_counter() - started:.1f} s; removed"
                )
            return 0
        if not args.output:
            raise ParameterError("OUTPUT is required (a label job's results folder)")
        check_folder(args.output, "results folder")
        page = write_page(args.output, window_s=window_s)
        print(f"report: {page} in {time.perf_counter() - started:.1f} s")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
