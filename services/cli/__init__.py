"""The server-side `barkstream` commands, one module per command group.

    main.py        the parser and the dispatcher (client/cli.py hands server commands to `main`)
    generate.py    `barkstream generate`: text to WAV offline, in this process
    checkpoint.py  `barkstream checkpoint random|verify|fetch`
    serve.py       `barkstream serve [ROLE]`: the embedded server or one service
"""
