"""Attack: code locations are file names the student chooses: code compiled under a 'file name'
inside /submission that carries a newline, a Markdown heading, backticks, HTML and a workflow
command, so that the location shown in feedback and annotations forges output."""

FAKE = "/submission/x`\n# Forged heading `<script>alert(1)</script>::error file=/etc/passwd::pwned\ud800.py"
CODE = compile("def boom(*args):\n    raise ValueError('look where I am')\n", FAKE, "exec")
namespace = {}
exec(CODE, namespace)


def dot(a, b):
    namespace["boom"](a, b)


def normalize(a, eps=1e-12):
    namespace["boom"](a)


class Accumulator:
    def __init__(self, n):
        namespace["boom"](n)
