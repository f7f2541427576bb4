"""The one record every QA dataset yields and every scorer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

LETTERS = "ABCDEFGHIJ"


@dataclass
class MCQuestion:
    """A multiple-choice question.

    id        stable identifier (dataset name + index)
    question  the stem, without the options
    options   option texts in display order (2..10)
    answer    index of the correct option in `options`
    split     "train" / "validation" / "test" or a difficulty name ("basic", "intermediate", "expert")
    codes     code_ids the question is about (known by construction for the ontology set,
              filled by the linker for free text); the adapter turns them into a soft prefix
    meta      anything else (difficulty, source fields)
    """

    id: str
    question: str
    options: list[str]
    answer: int
    split: str = "test"
    codes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.question or not self.question.strip():
            raise ValueError(f"{self.id}: empty question")
        if not 2 <= len(self.options) <= len(LETTERS):
            raise ValueError(f"{self.id}: needs 2..{len(LETTERS)} options, got {len(self.options)}")
        if any(not str(o).strip() for o in self.options):
            raise ValueError(f"{self.id}: empty option")
        if not 0 <= self.answer < len(self.options):
            raise ValueError(f"{self.id}: answer index {self.answer} outside the {len(self.options)} options")

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]
