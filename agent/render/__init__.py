"""Pure rendering: a snapshot -> what the app reads, with no I/O (the sinks write it).

* ``outputs``: the Renderer — every secret's file and env variable, the keys of JSON/YAML secrets, the
  templates and output formats, re-rendered only when a secret they use changed;
* ``keys``: key paths and bounded JSON/YAML payload parsing; ``formats``: a set of secrets as one file;
* ``envfile``: the env file's lines;
* ``templates``: compile, check and render one Jinja2 template, errors naming the line, never a value;
* the sandbox templates run in: ``sandbox`` (the environment, the AST rewrite), ``budget`` (steps,
  memory, time), ``bounded`` (operators and methods that cannot blow up), ``values`` (what a template
  sees, what may become text), ``filters``, ``pem`` (PEM and PKCS#12).
"""
