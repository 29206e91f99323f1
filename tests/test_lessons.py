"""The notebooks as lessons: objectives first, takeaways last, at least three exercises each made
of a stub, a hidden solution and a check against the package; student versions without the
solutions that still run to the end."""

import re
from pathlib import Path

import nbformat
import pytest

from kfrtrl_lab.notebook import exercises
from kfrtrl_lab.notebook.reports import notebooks, strip
from kfrtrl_lab.notebook.student import check_executed, student_version, tags

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks(ROOT / "notebooks")


def exercise_blocks(nb):
    """[(exercise cell, [solution cells], check cell)] in order; raises on a malformed block."""
    blocks, cells = [], nb.cells
    for i, cell in enumerate(cells):
        if "exercise" not in tags(cell):
            continue
        j = i + 1
        solutions = []
        while j < len(cells) and "solution" in tags(cells[j]):
            solutions.append(cells[j])
            j += 1
        assert solutions, f"exercise at cell {i} has no solution cell after it"
        assert j < len(cells) and "check" in tags(cells[j]), f"exercise at cell {i}: no check cell after its solution"
        blocks.append((cell, solutions, cells[j]))
    return blocks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_structure(path):
    nb = nbformat.read(path, as_version=4)
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown" and "objectives" in tags(first)
    for word in ("Objectives", "Prerequisites", "Time"):
        assert word in first.source, f"the objectives cell names no {word!r}"
    assert "notation.md" in first.source  # every lesson links the one notation page
    assert last.cell_type == "markdown" and "takeaways" in tags(last)
    assert "Takeaways" in last.source and "References" in last.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_are_stub_solution_check(path):
    nb = nbformat.read(path, as_version=4)
    blocks = exercise_blocks(nb)
    assert len(blocks) >= 3, f"{len(blocks)} exercises"
    for exercise, solutions, check in blocks:
        assert exercise.cell_type == "code" and "NotImplementedError" in exercise.source
        for s in solutions:
            if s.cell_type == "code":
                assert s.metadata.get("jupyter", {}).get("source_hidden") is True, "solutions start folded"
        assert check.cell_type == "code"
        assert re.search(r"\blesson\d\d\.check_\w+\(", check.source), "a check cell calls a checker of the package"
    # every tagged cell belongs to a block: a stray solution would be lost from the student version
    in_blocks = {id(c) for b in blocks for c in (b[0], *b[1], b[2])}
    for cell in nb.cells:
        if {"exercise", "solution", "check"} & set(tags(cell)):
            assert id(cell) in in_blocks, f"stray {tags(cell)} cell: {cell.source[:40]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_version_drops_solutions_and_lets_checks_fail(path):
    nb = nbformat.read(path, as_version=4)
    student = student_version(nb)
    assert not any("solution" in tags(c) for c in student.cells)
    assert len(student.cells) == len(nb.cells) - sum("solution" in tags(c) for c in nb.cells)
    assert all("raises-exception" in tags(c) for c in student.cells if "check" in tags(c))
    assert not strip(nbformat.read(path, as_version=4))  # the instructor's file itself is untouched


def test_executed_student_notebook_is_judged_by_its_errors():
    def cell(tag, ename=None):
        c = nbformat.v4.new_code_cell("x", metadata={"tags": [tag]} if tag else {})
        if ename:
            c.outputs = [nbformat.v4.new_output("error", ename=ename, evalue="", traceback=[])]
        return c

    good = nbformat.v4.new_notebook(cells=[cell("exercise"), cell("check", "NotImplementedError")])
    assert check_executed(good) == []
    solved = nbformat.v4.new_notebook(cells=[cell("exercise"), cell("check")])
    assert "check passed without a solution" in check_executed(solved)[0]
    crash = nbformat.v4.new_notebook(cells=[cell(None, "ValueError"), cell("check", "NotImplementedError")])
    assert "ValueError" in check_executed(crash)[0]


def test_expect_close_names_what_is_off():
    exercises.expect_close([1.0, 2.0], [1.0, 2.0], "x")
    with pytest.raises(exercises.ExerciseFailed, match="influence: off by up to 0.5"):
        exercises.expect_close([1.0, 2.5], [1.0, 2.0], "influence")
    with pytest.raises(exercises.ExerciseFailed, match="expected shape"):
        exercises.expect_close([1.0], [1.0, 2.0], "x")
