"""Synth job: write the built-in synthetic demo corpus (ten genres, GTZAN-style names).

    python -m jobs.synth OUTPUT [--per-genre 10] [--seconds 30] [--seed 0]
                                [--extra-styles [--extra-per-style N]]
    python -m jobs.synth --smoke-test [OUTPUT]     # 2 tracks per genre of 4 s

Tracks are written as OUTPUT/<genre>/<genre>.NNNNN.<wav|flac|ogg> at mixed sample
rates, mono and stereo; the same arguments always write the same audio. With
--extra-styles, styles that are none of the ten (drone, techno, solo percussion,
whispered and voiced speech, a field recording) go to OUTPUT/_other/<style>.NNNNN.<ext>:
a folder whose name starts with "_" is listed but never labelled; tune trains on _other/
as outlier exposure (the genres' probabilities pushed towards uniform on it).
"""

from __future__ import annotations

import sys
import tempfile
import time

import soundfile as sf

from jobs._cli import parser, run_main

#: Longest track the job writes: a track is rendered in memory (about 3 MB a second at
#: 48 kHz), one per CPU at a time, and the demo corpus needs seconds, not hours.
MAX_SECONDS = 600.0


def main(argv: list[str] | None = None) -> int:
    p = parser("jobs.synth", __doc__.splitlines()[0])
    p.add_argument("output", nargs="?", help="folder to write <genre>/<genre>.NNNNN.<ext> into")
    p.add_argument("--per-genre", type=int, default=10, help="tracks per genre (default: 10)")
    p.add_argument(
        "--seconds", type=float, default=30.0, help="seconds per track, at most 600 (default: 30)"
    )
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")
    p.add_argument(
        "--extra-styles",
        action="store_true",
        help="also write styles outside the ten genres into OUTPUT/_other/ (unlabelled)",
    )
    p.add_argument(
        "--extra-per-style",
        type=int,
        default=None,
        metavar="N",
        help="tracks per extra style, with --extra-styles (default: as many as per genre)",
    )
    p.add_argument(
        "--smoke-test", action="store_true", help="2 tracks per genre of 4 s; OUTPUT optional"
    )
    args = p.parse_args(argv)

    def body() -> int:
        from genre.config import OTHER_FOLDER
        from genre.errors import ParameterError
        from genre.synth import write_corpus, write_other

        per_genre, seconds, output = args.per_genre, args.seconds, args.output
        if args.smoke_test:
            per_genre, seconds = 2, 4.0
            output = output or tempfile.mkdtemp(prefix="genre-synth-")
        if not output:
            raise ParameterError("OUTPUT is required (or --smoke-test)")
        if args.extra_per_style is not None and not args.extra_styles:
            raise ParameterError("--extra-per-style needs --extra-styles")
        # Every check before the first file: a refused run writes nothing.
        if not 0 < seconds <= MAX_SECONDS:  # False for NaN too
            raise ParameterError(
                f"--seconds={seconds:g} must be more than 0 and at most {MAX_SECONDS:g}"
            )
        if args.extra_per_style is not None and args.extra_per_style < 1:
            raise ParameterError(
                f"--extra-per-style={args.extra_per_style} must be a positive integer"
            )
        start = time.perf_counter()
        paths = write_corpus(output, per_genre=per_genre, seconds=seconds, seed=args.seed)
        formats = sorted({path.suffix.lstrip(".") for path in paths})
        rates = sorted({sf.info(str(path)).samplerate for path in paths})
        print(
            f"wrote {len(paths)} tracks of {seconds:g} s ({len(formats)} formats: "
            f"{', '.join(formats)}; {len(rates)} rates) to {output} "
            f"in {time.perf_counter() - start:.1f} s"
        )
        if args.extra_styles:
            start = time.perf_counter()
            per_style = args.extra_per_style if args.extra_per_style is not None else per_genre
            extra = write_other(output, per_style=per_style, seconds=seconds, seed=args.seed)
            print(
                f"wrote {len(extra)} extra-style tracks (unlabelled) to {output}/{OTHER_FOLDER} "
                f"in {time.perf_counter() - start:.1f} s"
            )
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
