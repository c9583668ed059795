"""Transcript normalisation and the King James Bible sentences of the synthetic ``bible`` domain.

Transcripts follow LibriSpeech: letters, apostrophes and single spaces; the corpus files hold them upper-case,
manifests lower-case (as the MLPerf reference normalises them).
"""

import functools
import re
import shutil
import subprocess

# Every verse of the KJV, as Debian's `bible` command (package bible-kjv) names the range.
KJV_RANGE = "Ge1:1-Re22:21"
MIN_WORDS, MAX_WORDS = 3, 20

_VERSE = re.compile(r"^\S+ (.+)$")  # "Ge1:1 In the beginning ..." -> text after the reference
_CLAUSE_END = re.compile(r"[.?!;:]")
_SPOKEN_OK = re.compile(r"^[A-Za-z' ,]+$")  # commas only shape prosody; anything else could be spoken
_TRANSCRIPT_OK = re.compile(r"^[a-z']+( [a-z']+)*$")


def normalize_transcript(text: str) -> str:
    """Lower-case ``text`` and collapse whitespace (the manifest form of a LibriSpeech transcript)."""
    return " ".join(text.lower().split())


def is_clean_transcript(text: str) -> bool:
    """True when ``text`` is lower-case words of letters and apostrophes separated by single spaces."""
    return bool(_TRANSCRIPT_OK.match(text)) and all(any(c.isalpha() for c in w) for w in text.split())


def require_program(name: str, package: str) -> str:
    """Return the path of program ``name`` or raise RuntimeError naming it and the package that provides it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"program {name!r} not found on PATH; install the Debian package {package!r} "
            "(bash scripts/install_system_deps.sh does it on Debian/Ubuntu)"
        )
    return path


def split_kjv(verses: list[str]) -> list[tuple[str, str]]:
    """Clauses of 3-20 words from KJV verse texts, as ``(spoken, transcript)`` pairs, first occurrence kept.

    A clause ends at ``. ? ! ; :``. Clauses holding anything but letters, apostrophes, spaces and commas
    (digits, hyphens, brackets) are dropped so the audio says exactly the transcript. ``spoken`` keeps the
    commas and lower-cases all-capital words ("LORD"), which TTS engines could otherwise spell out.
    """
    seen, out = set(), []
    for verse in verses:
        for clause in _CLAUSE_END.split(verse):
            clause = " ".join(clause.split()).strip(" ,")
            if not clause or not _SPOKEN_OK.match(clause):
                continue
            transcript = normalize_transcript(clause.replace(",", " "))
            n_words = len(transcript.split())
            if not MIN_WORDS <= n_words <= MAX_WORDS or not is_clean_transcript(transcript):
                continue
            if transcript in seen:
                continue
            seen.add(transcript)
            spoken = " ".join(w.lower() if len(w) > 1 and w.isupper() else w for w in clause.split(" "))
            out.append((spoken, transcript))
    return out


@functools.lru_cache(maxsize=1)
def kjv_sentences() -> tuple[tuple[str, str], ...]:
    """All usable KJV clauses, in canonical (book) order, from Debian's `bible` command."""
    bible = require_program("bible", "bible-kjv")
    dump = subprocess.run([bible, "-f", KJV_RANGE], check=True, capture_output=True, text=True).stdout
    verses = [m.group(1) for m in map(_VERSE.match, dump.splitlines()) if m]
    if not verses:
        raise RuntimeError(f"`bible -f {KJV_RANGE}` printed no verses; is the package 'bible-kjv-text' installed?")
    return tuple(split_kjv(verses))
