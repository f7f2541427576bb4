"""`make demo`: the main job on the embedded default, offline on CPU.

Builds (or reuses) the vocabulary + knowledge graph and prints its statistics.
"""

from medtok.codes.build import build_vocabulary, format_statistics
from medtok.paths import default_vocab_dir


def main() -> None:
    _, _, stats = build_vocabulary(default_vocab_dir())
    print(format_statistics(stats))


if __name__ == "__main__":
    main()
