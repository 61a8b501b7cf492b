"""The patterns that find secrets in free text (redact.text): made on the first text that may hold a
secret. Of the lazy bundle (agent_build.py): ~17 KB of code that most processes never run, which the
start-up bundle every traced process reads carried before. Each entry: [what the text holds (one of
them, in lower case; "" for any text) if the pattern may match it, its source, what a match of it
becomes, the pattern compiled once a text needed it, None or, for a pattern whose match starts at a
program's name (one match a command each pass), the flag it redacts: it runs again while the text
holds that more often than it redacted ("": an operand, each word)]."""

from __future__ import annotations

import re

from .redact import (PATTERNS, REDACTED, SECRET_HEADERS, _COMMAND_LISTS, _FLAG_FORMS, _FLAG_WORDS, _LAST,
                     _NO_USER_SECRET, _NO_VALUE_FLAGS, _OPERANDS, _PASS_SOURCES, _SECRET_NAMES, _SECRET_PREFIXES,
                     _SECRET_WORDS, _SOURCE_ENDINGS, _USER_FLAGS, _holds_word)

# A quoted string in free text, its quotes escaped inside another string too (`TOKEN=\"X\"` in a `-c`
# program's repr)
_QUOTED = (r"\\\"(?:[^\"\\]|\\[^\"])*\\\"|\\'(?:[^'\\]|\\[^'])*\\'"
           r"|\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'")
# A secret value in free text, after its name (the last group of the patterns below): a quoted string whole, else up
# to a space, quote or separator (an unclosed quote with it). Never one already redacted, a kept `user:` or
# `pass:` before it (`pass:[REDACTED]`); never the quotes around a list's comma (`'password:', 'X'`).
_NOT_A_VALUE = r"(?!\\?['\"]?(?:[^\s:'\"]*:)?\[REDACTED\]|['\"]\s*,)"
_UNQUOTED = r"\\?['\"]?[^\s'\",&;)}\]]+"
_VALUE = _NOT_A_VALUE + "(" + _QUOTED + "|" + _UNQUOTED + ")"
# The schemes an Authorization header's value may start with: kept before the [REDACTED] (not secret).
_AUTH_SCHEMES = ("bearer", "basic", "digest", "token", "negotiate", "ntlm", "hoba", "mutual", "aws4-hmac-sha256")


def free_text_patterns() -> list:
    """The patterns, uncompiled. Each is compiled when a text first needs it (`redact.text`): ~0.3 ms each,
    and a text needs few (a program's flags where the program is named, a URL's paths where its host is)."""
    words = "|".join(_SECRET_WORDS)
    value = _VALUE
    # A string literal in a program, its prefix too (`f"X{y}"`, `b'X'`, `r"X"`); `skipped`, one passed over,
    # read without escaped quotes inside (a third of the cost to compile)
    literal = r"[rRbBuUfF]{0,2}(?:" + _QUOTED + ")"
    skipped = r"[rRbBuUfF]{0,2}\\?(?:'[^'\n]*'|\"[^\"\n]*\")"
    # A name's value in a program (`NAME = X`, `NAME=X` as a keyword, `'NAME': X`): a string literal; a tuple,
    # list, dict, call or shell expansion whole, none of the same bracket inside (`('me', 'X')`,
    # `HTTPBasicAuth('me', 'X')`, `${TOKEN:-X}`: only here, as each pattern holding one costs more to compile);
    # else `value`'s; and the defaults after it (`X or 'Y'`)
    bracketed = "|".join(opening + "(?:" + skipped + r"|[^" + pair + r"'\"\\]|\\(?!['\"]))*" + closing
                         for opening, pair, closing in ((r"\(", "()", r"\)"), (r"\[", r"\[\]", r"\]"),
                                                        (r"\{", "{}", r"\}")))
    code_value = (_NOT_A_VALUE + "((?:" + literal + r"|\$?[\w.]*(?:" + bracketed + ")|" + _UNQUOTED
                  + r")(?:\s*(?:or\b|\|\||\?\?)\s*" + literal + ")*)")
    # Each pattern: group 1 is kept, group 2 is the secret (`_keep_name`).
    # A header line (`Cookie: a=b; sid=X`, `Authorization: Digest username="u", response="X"`): the
    # whole value, to the end of its quotes or line, after the authorization scheme if any. A header
    # is a name the table's secret headers hold, or a name with a dash holding a secret word
    # (`X-Vault-Token`, `Private-Token`; not an option: keytool's `-keypass:file F`); `key: value` in a
    # program's text keeps the next rule's.
    # The scheme is kept: optional, then refused as the value (else, its value already redacted, the
    # pattern would take the scheme for the value, backtracking).
    schemes = "|".join(re.escape(scheme) for scheme in _AUTH_SCHEMES)
    scheme = r"(?:(?:" + schemes + r")[ \t]+)?(?!(?:" + schemes + r")[ \t])"
    header = (r"(?:" + "|".join(re.escape(name) for name in sorted(SECRET_HEADERS))
              + r"|(?=\w[\w-]*-)[\w-]*(?:" + words + r")[\w-]*)[ \t]*:[ \t]*" + scheme + r"(?=\S)")
    patterns = [  # (what the text holds if the pattern may match it, source, what a match becomes)
        ((":",), r"(?im)((?<=')" + header + r")(?!\[REDACTED\])([^'\r\n]+)", _keep_name),  # in '...'
        ((":",), r"(?im)((?<=\")" + header + r")(?!\[REDACTED\])((?:[^\"\\\r\n]|\\.)+)", _keep_name),  # in "..."
        ((":",), r"(?im)((?:^|(?<=[\s=]))" + header + r")(?!\[REDACTED\])([^\r\n]+)", _keep_name),  # to the line's end
    ]
    # words of a shell command, or of a list in a -c program (`'htpasswd', '-b', ...`)
    between = r"(?:['\"]?\s*,\s*['\"]?|['\"]?\s+['\"]?)"
    in_word = r"[^\s'\",;&|]"
    sources = r"(?!\\?['\"]?(?:" + "|".join(_PASS_SOURCES) + "))"  # not `-passin env:VAR`

    # A program's name, to its subcommand if any as argv reads it: the first word that is no option or an option's
    # value (`docker --context prod login`; `openssl x509 -CA ca.pem` runs no `ca`)
    def command_of(program: str, subcommand: str) -> str:
        if not subcommand:
            return r"\b" + re.escape(program) + r"\b"
        if program in _COMMAND_LISTS:  # any words before it
            return (r"\b" + re.escape(program) + r"(?:" + between + in_word + r"+)*?" + between + re.escape(subcommand)
                    + "(?!" + in_word + ")")
        return (r"\b" + re.escape(program) + r"(?:" + between + "-" + in_word + r"*(?:" + between + "(?!-)" + in_word
                + r"+)?)*" + between + re.escape(subcommand) + "(?!" + in_word + ")")

    # `curl -u me:S3CR3T`, `mysql -pS3CR3T`, `docker login -p X` in a shell command or a -c program
    for program, subcommand, flag, kind in _FLAG_FORMS:
        # the value joined (`-pX`: not the next item of a list, `'-p', 'shop'`; `=` is glue) or after a space,
        # `=` or a comma; joined to a short flag only (as argv: `--user-agent` is not `--user`); `next`: not joined
        joined = r"(?!['\"]?\s*,|=)"
        if kind == "joined":
            glue = "=?" + joined
        else:
            glue = (r"(?:['\"]?\s*,\s*['\"]?|\s+|=" + ("|" + joined if len(flag) == 2 and kind != "next" else "")
                    + ")")
        command = command_of(program, subcommand) + r"[^;&|\n]*?"
        # `user:` kept
        user = r"[^\s%'\"]*%" if kind == "percent" else r"(?:[^\s:'\"]*:)?"
        if kind == "next" and flag.startswith("-pass"):
            user = sources + user
        patterns.append(((program,), "(" + command + r"[\s'\"]" + re.escape(flag) + glue + r"['\"]?" + user + ")"
                         + value, _keep_name, flag))
    # `openssl passwd -salt ab X`: after the subcommand, the first word that is no option, no listed option's
    # value and not redacted (`operand`: the next pass, the next one), a quoted one whole (`'my S3CR3T'`)
    gap = r"(?:['\"]?\s*,\s*|['\"]?\s+)"  # `between`, the next word's opening quote not taken
    for program, subcommands in _OPERANDS.items():
        for subcommand, (options, every) in subcommands.items():
            listed = "(?:" + "|".join(re.escape(option) for option in sorted(options)) + ")(?!" + in_word + ")"
            words_before = (r"(?:" + between + r"(?:" + listed + gap + "(?:" + _QUOTED + "|" + in_word + r"+)|(?!"
                            + listed + r")-" + in_word + r"*" + (r"|\[REDACTED\]" if every else "") + "))*")
            source = ("(" + command_of(program, subcommand) + words_before + gap + r")(?!['\"]?(?:-|\[REDACTED\]))("
                      + _QUOTED + r"|[^\s;&|<>'\",)\]]+)")
            # `operand`'s run where the text holds its subcommand (openssl's `passwd`: fewer texts than `openssl`),
            # `argument`'s where it holds its program (mysqladmin's `password` is in most texts holding a secret)
            if every:
                patterns.append(((subcommand,), source, _keep_name, ""))
            else:
                patterns.append(((program,), source, _keep_name))
    # A flag of a program that `_FLAG_WORDS` names, in its command (the text since the last `;&|` or line
    # holds the program's name): openssl's holding its words are redacted (`-srppass X`, `-passcerts pass:X`,
    # every one of the command), as argv reads them (`program_flag`); the others are kept (`keep_flag`:
    # `openssl req -keyout key.pem`), not a JVM option keytool passes on (`-J-Dx.password=X`)
    flag_command = re.compile(r"\b(" + "|".join(re.escape(program) for program in _FLAG_WORDS) + r")\b[^;&|\n]*$")

    def program_flag(match) -> str:
        found = flag_command.search(match.string, 0, match.start())
        if (found is not None and match.group(2) not in _NO_VALUE_FLAGS
                and _holds_word(match.group(2), _FLAG_WORDS[found.group(1)])):
            return match.group(1) + REDACTED
        return match.group(0)

    def keep_flag(match) -> str:
        name = match.group(1)
        # a negation's next word is no value of it (`--no-password-check build`); a value joined to it
        # (`--no-x-token=X`) is one: redacted, as in argv
        if name.startswith("--no-") and not name.rstrip(_QUOTES).endswith(("=", ":")):
            return match.group(0)
        if name.startswith("-"):
            if "." not in name:
                found = flag_command.search(match.string, 0, match.start())
                if found is not None and not _holds_word(name, _FLAG_WORDS[found.group(1)]):
                    return match.group(0)
        elif "=" not in name and ":" not in name and _in_list(match.string, match.start(), match.end()):
            return match.group(0)
        return name + REDACTED

    flag_words = sorted({flag_word for program_words in _FLAG_WORDS.values() for flag_word in program_words})
    patterns.append((tuple(program for program in _FLAG_WORDS if _FLAG_WORDS[program]),  # group 2: the flag
                     r"((?<=[\s'\"])(-[\w-]*(?:" + "|".join(flag_words) + r")[\w-]*)"
                     + r"(?:['\"]?\s*,\s*['\"]?|\s+|=)['\"]?" + sources + r"(?:[^\s:'\"]*:)?)" + value, program_flag))
    # `htpasswd -b FILE USER X`: the last word of the command, a quoted one whole (the first word that runs to
    # the command's end: `'my S3CR3T'`, not its `S3CR3T'`), before any redirection (`> FILE`, `2>&1`)
    for program, letters in _LAST.items():
        patterns.append(((program,), r"(\b" + re.escape(program) + r"(?:" + between + r"[^;&|\n]*?)?" + between
                         + r"-[A-Za-z]*[" + letters + r"][A-Za-z]*(?:" + between + r"[^;&|<>\n]*?)?"
                         + between + r")(?!-|\\?['\"]?\[REDACTED\])(" + _QUOTED + r"|[^\s;&|<>'\",)\]]+)"
                         + r"(?=['\"]?(?:\s*\d*[<>]+&?\s*[^\s;&|<>'\")\]]+)*\s*(?:[;&|\n)\]]|$))", _keep_name))
    # `aws configure set aws_secret_access_key X`, `npm config set //r/:_authToken X`: after a config word
    patterns.append((("config", "user-secrets"), r"(?i)(\b(?:config|configure|user-secrets)\b[^;&|\n]*?[\s'\"]set"
                     + between + r"(?:[\w/:@-]*\.)*[\w/:@-]*(?:" + words + r")[\w/:@-]*" + between + r")(?!-)" + value,
                     _keep_name))
    for pattern in [pattern for kind, pattern, _ in PATTERNS if kind == "path"]:  # a webhook's or a bot's secret in a URL's path
        parts = pattern.split("*")
        patterns.append(((parts[0],), "(" + r"[^/\s'\"]+".join(re.escape(part) for part in parts)
                         + r")(?!\[REDACTED\])([^/?#\s'\"&;]+)", _keep_name))
    # `-u me:X` of any program: the user kept; a secret of digits only (uid:gid, host:port) is none, nor one in
    # the command of a program whose `-u` is no `user:secret` (`docker run -u app:app`: user:group), as argv
    breaks = str.maketrans("'\"[](),", "       ")

    def keep_user(match) -> str:
        start = max(match.string.rfind(separator, 0, match.start()) for separator in ";&|\n") + 1
        for word in match.string[start:match.start()].translate(breaks).split():
            if word.rpartition("/")[2] in _NO_USER_SECRET:
                return match.group(0)
        return match.group(1) + REDACTED

    user_flags = sorted(_USER_FLAGS)
    patterns.append((tuple(user_flags), r"((?<![\w-])(?:" + "|".join(re.escape(flag) for flag in user_flags)
                     + r")(?:['\"]?\s*,\s*|\s+|=)['\"]?[^\s:'\"/@]+:)(?!\d+(?:[\s'\"]|$)|[/~])" + value, keep_user))
    # what reads a secret from stdin (`echo X | sudo -S cmd`), and a literal fed to it: a word, or a quoted
    # string whole, not a shell variable nor one already redacted
    stdin_reader = (r"(?:--(?:password|passphrase|token)-stdin\b|--with-token\b|\bchpasswd\b"
                    r"|\b(?:passwd|sudo)\b[^;&|\n]*?\s(?:--stdin\b|-[A-Za-z]*S\b))")
    fed = r"(?!\\?['\"]?\$|\[REDACTED\])(" + _QUOTED + r"|[^\s'\"|;&<>]+)"
    # a name saying where the secret is (`--password-file PATH`, `--passphrase-fd 0`, `--password-stdin`)
    source_name = "".join("(?<!" + ending + ")" for ending in _SOURCE_ENDINGS)
    name = r"[\w.-]*(?:" + words + r")[\w.-]*" + source_name
    quoted_name = r"\\?['\"]" + name + r"\\?['\"]"
    keyword = r"\w+\s*=(?!=)\s*"  # (`[a-z_]` under IGNORECASE costs 0.2 ms more to compile)
    patterns += [
        (("=",), r"([?&#;](?:" + "|".join(_SECRET_NAMES) + r")=)(?!\[REDACTED\])([^&#;\s'\"]+)", _keep_name),
        # a URL's userinfo, to its last `@` (`redis://:X@h`, `https://me:p@ss@h`): `user:` kept, a user alone
        # (`https://TOKEN@github.com/...`) redacted as `url` does; percent-encoded too
        # (`?next=https%3A%2F%2Fme%3AX%40h`)
        (("://",), r"(://(?:[^/?#\s:@'\"]*:)?)(?![^/?#\s'\"]*\[REDACTED\])([^/?#\s'\"]+)(?=@)", _keep_name),
        (("%3a%2f%2f",), r"(?i)(%3A%2F%2F(?:(?:(?!%2F|%3A|%40)[^/?#&\s'\"])*%3A)?)"
         r"(?!(?:(?!%2F)[^/?#&\s'\"])*\[REDACTED\])((?:(?!%2F)[^/?#&\s'\"])+)(?=%40)", _keep_name),
        # a name-value object of a secret, its value (`{"name": "DB_PASSWORD", "value": "X"}`: Kubernetes' env;
        # AWS's `{"Key": "api_key", "Value": "X"}`; `name: DB_PASSWORD` then `value: X` in YAML), as `structure`
        # reads it
        (("value",), r"((?i:\b\w*(?:name|key))\\?['\"]?\s*[:=]\s*\\?['\"]?(?i:" + name + r")(?![\w.-])\\?['\"]?"
         + r"\s*(?:,\s*|\s+)\\?['\"]?(?i:\w*value)\\?['\"]?\s*[:=]\s*)" + value, _keep_name),
        # NAME=X, NAME: X, 'NAME': X, NAME']=X, NAME = "X", NAME == "X", NAME := "X", 'NAME', 'X' (a call's
        # arguments or a tuple, not a list's words unless a pair, `[['password', 'X']]`: `keep_flag`; not an option:
        # `['htpasswd', '-b', ...]`; a keyword's value: `os.getenv('API_KEY', default=X)`; not a secret's name
        # before a call's last argument, its value: `config.set('auth', 'token', X)`; nor a dict's next key:
        # `{'type': 'password', 'n': 1}`), 'NAME:', 'X' (`print('password:', 'X')`), 'NAME:': X; their quotes
        # escaped too (`os.getenv(\"API_KEY\", \"X\")` in a shell's "..."); not an exception's class (`KeyError:
        # 'x'`, `InvalidTokenError: expired`: a message follows). What follows the name is taken whole when there
        # (`default=`, `': `): else, its value redacted, a second pass would take it for the value. One pattern for
        # these (each more scans the text again), run where the text holds `=`, `:` or `,` (a shell command often
        # holds none)
        (("=", ":", ","), r"(?i)((?:--?|\b)(?![\w.]*(?-i:Error|Exception|Warning)\b)" + name
         + r"(?:(?:\\?['\"])?\]?\s*(?:[:=!]==?|[=:])(?!=)\s*(?:\\?['\"]\s*[,:]\s*|(?!\\?['\"]\s*[,:]))"
         + r"|(?:\\?['\"])?\s*,\s*(?!\\?['\"]?-)(?:" + keyword + "|(?!" + keyword + "))(?!" + quoted_name
         + r"\s*,(?:[^,()'\"]|" + skipped + r")*\)|" + skipped + r"\s*:))" + scheme + r")" + code_value, keep_flag),
        # a default after a secret's getenv (`os.environ.get('TOKEN') or 'X'`, `process.env.TOKEN || "X"`; its
        # literals first, no `\b`: `re` passes over the positions where none starts at once)
        (("env",), r"((?:getenv\s*\(|environ\.get\s*\(|environ\s*\[|env\s*[\[.]|ENV\s*\[)\s*(?i:\\?['\"]?"
         + name + r"(?![\w.-])\\?['\"]?)(?:[^()]*?[)\]])?\s*(?:or\b|\|\||\?\?)\s*)(?!\[REDACTED\])("
         + literal + ")", _keep_name),
        # the last argument of a secret's setter or an authentication's object, a literal (`user.set_password('X')`,
        # `keyring.set_password('svc', 'me', 'X')`, `HTTPBasicAuth('me', 'X')`, `OAuth1('key', 'X')`)
        (("set", "auth(", "auth1("), r"((?:\b(?i:set\w*?(?:" + words + r"))\w*\s*|\b[A-Z]\w*Auth1?)\((?:(?:"
         + skipped + r"|[^()'\"\\])*?,\s*)?)(?!\[REDACTED\])(" + literal + r")(?=\s*\))", _keep_name),
        (("bearer", "basic"), r"(?i)(\b(?:bearer|basic)\s+)" + value, _keep_name),
        # a literal fed to a command that reads its secret from stdin (`echo X | docker login --password-stdin`,
        # `printf '%s' X | gh auth login --with-token`, `echo X | sudo -S cmd`, `... --password-stdin <<< X`);
        # not a variable (`echo "$TOKEN" | ...`)
        (("-stdin", "with-token", "chpasswd", "sudo"),
         r"(\b(?:echo|printf)(?:\s+-[neE]+)*\s+(?:\\?['\"]%s[^'\"\s]*\\?['\"]\s+)?)" + fed
         + r"(?=\\?['\"]?\s*\|[^;&|\n]*?" + stdin_reader + ")", _keep_name),
        (("<<<",), "(" + stdin_reader + r"[^;&|\n]*?<<<\s*)" + fed, _keep_name),
        # --token X, --password "X Y"; not a word's dash (`make test-auth build`: looked behind once a `-` matched,
        # as a pattern starting with a lookbehind is tried at every position)
        (("-",), r"(?i)(-(?<![\w.-]-)-?" + name + r"\s+)(?!-)" + value, keep_flag),
        (_SECRET_PREFIXES, r"()(\b(?:" + "|".join(re.escape(p) for p in _SECRET_PREFIXES) + r")[A-Za-z0-9_\-.]{4,})",
         _keep_name),
    ]
    return [[tuple(mark.lower() for mark in marks), source, keep, None, again[0] if again else None]
            for marks, source, keep, *again in patterns]


def _keep_name(match) -> str:
    return match.group(1) + REDACTED


# What stands around an item of free text: whitespace, its quotes, their escape
_QUOTES = " \t\n\r\\'\""


def _in_list(text_: str, start: int, end: int) -> bool:
    """Whether a name and its value (`start` to `end`) are among a list's items (`['make', 'test-auth', 'build']`:
    a command line or names), not a call's arguments or a tuple's (`os.getenv('API_KEY', 'X')`): the last bracket
    opened before it, a `[`; nor a pair, a list of these two items that is an item itself (`[['password', 'X']]`)."""
    opening = max(text_.rfind("[", 0, start), text_.rfind("(", 0, start))
    if opening < 0 or text_[opening] != "[" or text_.find("]", opening, start) >= 0:
        return False
    return not (text_[opening + 1:start].strip(_QUOTES) == "" and text_[end:].lstrip(_QUOTES).startswith("]")
                and text_[:opening].rstrip().endswith(("[", ",")))
