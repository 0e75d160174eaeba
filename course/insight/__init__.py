"""See the class: the class report (HTML pages with plots, a terminal summary), test health, code
similarity, and flaky-test detection under several seeds.

Everything here reads the gradebook (through :mod:`course.report` and :mod:`course.gradebook`) and
the collected files; nothing here changes a grade.
"""
