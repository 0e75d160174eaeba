"""Attack: exception messages built to break every trusted output -- a lone surrogate and a NUL
(SQLite and UTF-8 writers), XML-forbidden control characters (JUnit), ANSI escapes and rich markup
(the instructor's terminal), a forged Markdown heading and fence (feedback, CI summary), live HTML
(the feedback page) and a spreadsheet formula -- hoping to stop the class or forge a score."""

import torch

POISON = ("\ud800\x00\x01\x0b\x1b[2J\x1b]8;;http://evil\x07click\x1b]8;;\x07 [bold red]FORGED[/] "
          "\n```\n# Score: 100 / 100\n## Public tests that did not pass\nAll public tests passed.\n"
          "</pre><script>document.title='pwned'</script><!-- =HYPERLINK(\"http://evil\") \u202e|x|\n::error::forged")


def dot(a, b):
    raise ValueError(POISON)


def normalize(a, eps=1e-12):
    raise RuntimeError(POISON * 3)


class Accumulator:
    def __init__(self, n):
        raise TypeError(POISON)
