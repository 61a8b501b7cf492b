"""Keep secrets out of spans: argv, URLs and headers are sanitized before they are recorded.

String operations first; `re` is imported only for free text that may hold a secret (this runs
inside every traced process at start-up, where importing `re` costs 5-10 ms).
"""

from __future__ import annotations

REDACTED = "[REDACTED]"

# Every form of secret this module knows, one line each: (kind, pattern, an example that holds the
# secret S3CR3T). tests/agent/test_secrets.py checks every example in each place its kind applies
# to (argv, URL, header, environment variable, span attribute), so adding a form is one line here.
#   word    a name (flag, variable, query parameter, header, JSON key, attribute key) containing it
#   name    a name that is exactly it (a word too common inside other names: `code`, `sig`, `pass`)
#   prefix  a value starting with it, whatever its name (API key formats of well-known services)
#   flag    `PROGRAM FLAG`: the value of that flag of that program, next to it or joined (`-pS3CR3T`,
#           `--user=me:S3CR3T`); in `user:secret`, the user is kept. `PROGRAM SUBCOMMAND FLAG`: only
#           after that subcommand (`docker login -p`; `docker run -p 8080:80` is a port): the first
#           word that is no option, or one after an option (that may be the option's value) that is it;
#           the program's own flags hold there too
#   joined  the same, joined only (`mysql -p DB` asks for the password: DB is the database)
#   next    the same, the next word only, or joined by `=` (openssl's and keytool's options are single-dash
#           words: `-keyout` is no `-k`; openssl 3 reads `-k=S3CR3T`); `pass:S3CR3T` keeps `pass:`
#   percent the same, a `user%secret` value only, the user kept (samba's `-U me%S3CR3T`; `-U me` asks)
#   last    `PROGRAM LETTER`: with that one-letter option (alone or grouped, `-cb`), the last word is
#           the secret (`htpasswd -b FILE USER PASSWORD`), a quoted one whole (`'my S3CR3T'`)
#   operand `PROGRAM SUBCOMMAND OPTION...`: after that subcommand, every word that is no option nor the value of
#           one of the OPTIONs (those taking one) is a secret (`openssl passwd -salt ab S3CR3T`: any number of them)
#   argument the same, the first such word only (`mysqladmin password S3CR3T flush-hosts`: its next words are
#           commands)
#   user    `FLAG`: of any program (not in the table for that flag), a `user:secret` value next to it
#           (`-u me:S3CR3T`, `--user=me:S3CR3T`), the user kept; a value that is not `user:secret`,
#           or whose secret is all digits (docker's `-u 1000:1000`, `host:8080`), kept whole
#   setting `set NAME VALUE` (`aws configure set`, `npm config set`), NAME's last dotted part a secret's
#           name: VALUE (in a shell command or a -c program: after a `config`/`configure` word)
#   path    `HOST/PATH`: a URL's path segment after it (`*`: any one segment, or part of one), to the
#           next `/` (webhook URLs and bot tokens that hold their secret in the path); every form that
#           matches a URL applies
PATTERNS = (
    ("word", "key", "--api-key S3CR3T"),
    ("word", "token", "--token S3CR3T"),
    ("word", "secret", "CLIENT_SECRET=S3CR3T"),
    ("word", "password", "--password=S3CR3T"),
    ("word", "passwd", "PASSWD=S3CR3T"),
    ("word", "passphrase", "--passphrase S3CR3T"),
    ("word", "pwd", "DB_PWD=S3CR3T"),
    ("word", "auth", "--auth S3CR3T"),
    ("word", "credential", "CREDENTIALS=S3CR3T"),
    ("word", "cookie", "Cookie: S3CR3T"),
    ("word", "session", "SESSION_ID=S3CR3T"),
    ("word", "signature", "X-Amz-Signature=S3CR3T"),
    ("word", "bearer", "BEARER=S3CR3T"),
    ("word", "private", "PRIVATE_KEY_DATA=S3CR3T"),
    ("name", "code", "https://app.example/callback?code=S3CR3T&state=xyz"),
    ("name", "sig", "https://blob.example/c/f?sv=2022&sig=S3CR3T"),
    ("name", "jwt", "https://app.example/sso?jwt=S3CR3T"),
    ("name", "sid", "https://app.example/p?sid=S3CR3T"),
    ("name", "pass", "https://app.example/login?user=me&pass=S3CR3T"),
    ("name", "pw", "https://app.example/login?user=me&pw=S3CR3T"),
    ("prefix", "cf-", "cf-S3CR3T0123"),
    ("prefix", "sk-", "sk-S3CR3T0123"),
    ("prefix", "ghp_", "ghp_S3CR3T0123"),
    ("prefix", "gho_", "gho_S3CR3T0123"),
    ("prefix", "ghs_", "ghs_S3CR3T0123"),
    ("prefix", "ghu_", "ghu_S3CR3T0123"),
    ("prefix", "ghr_", "ghr_S3CR3T0123"),
    ("prefix", "github_pat_", "github_pat_S3CR3T0123"),
    ("prefix", "xoxb-", "xoxb-S3CR3T0123"),
    ("prefix", "xoxp-", "xoxp-S3CR3T0123"),
    ("prefix", "xoxa-", "xoxa-S3CR3T0123"),
    ("prefix", "xoxr-", "xoxr-S3CR3T0123"),
    ("prefix", "xoxs-", "xoxs-S3CR3T0123"),
    ("prefix", "xapp-", "xapp-S3CR3T0123"),
    ("prefix", "AKIA", "AKIAS3CR3T0123"),
    ("prefix", "glpat-", "glpat-S3CR3T0123"),
    ("prefix", "glrt-", "glrt-S3CR3T0123"),
    ("prefix", "gldt-", "gldt-S3CR3T0123"),
    ("prefix", "pypi-AgEI", "pypi-AgEIcHlwaS5vcmcS3CR3T0123"),  # a PyPI token: base64 of its macaroon's `pypi.org`
    ("prefix", "sk_live_", "sk_live_S3CR3T0123"),  # Stripe's secret and restricted keys
    ("prefix", "rk_live_", "rk_live_S3CR3T0123"),
    ("prefix", "sk_test_", "sk_test_S3CR3T0123"),
    ("prefix", "rk_test_", "rk_test_S3CR3T0123"),
    ("prefix", "AIza", "AIzaS3CR3T0123"),  # a Google API key
    ("prefix", "ya29.", "ya29.S3CR3T0123"),  # a Google OAuth access token
    ("prefix", "eyJ", "eyJS3CR3T0123.eyJzdWIiOiIxIn0.c2ln"),  # a JWT: base64 of `{"`, its parts joined by dots
    ("flag", "curl -u", "curl -u me:S3CR3T https://example.invalid/"),
    ("flag", "curl --user", "curl --user me:S3CR3T https://example.invalid/"),
    ("flag", "curl -U", "curl -U me:S3CR3T https://example.invalid/"),
    ("flag", "curl --proxy-user", "curl --proxy-user me:S3CR3T https://example.invalid/"),
    ("joined", "mysql -p", "mysql -pS3CR3T shop"),
    ("joined", "mysqldump -p", "mysqldump -pS3CR3T shop"),
    ("joined", "mysqladmin -p", "mysqladmin -pS3CR3T status"),
    ("joined", "mariadb -p", "mariadb -pS3CR3T shop"),
    ("flag", "sshpass -p", "sshpass -p S3CR3T ssh host"),
    ("flag", "redis-cli -a", "redis-cli -a S3CR3T ping"),
    ("flag", "docker login -p", "docker login -u me -p S3CR3T registry.example"),
    ("flag", "podman login -p", "podman login -u me -p S3CR3T registry.example"),
    ("flag", "nerdctl login -p", "nerdctl login -u me -p S3CR3T registry.example"),
    ("flag", "buildah login -p", "buildah login -u me -p S3CR3T registry.example"),
    ("flag", "skopeo login -p", "skopeo login -u me -p S3CR3T registry.example"),
    ("flag", "oras login -p", "oras login -u me -p S3CR3T registry.example"),
    ("flag", "helm registry -p", "helm registry login registry.example -u me -p S3CR3T"),
    ("flag", "gh secret -b", "gh secret set NAME -b S3CR3T"),
    ("flag", "ssh-keygen -N", "ssh-keygen -t ed25519 -N S3CR3T -f key"),  # the new passphrase
    ("flag", "ssh-keygen -P", "ssh-keygen -p -P S3CR3T -f key"),  # the old one
    ("flag", "ldapsearch -w", "ldapsearch -x -D cn=admin -w S3CR3T -b dc=example"),  # the bind password
    ("flag", "ldapmodify -w", "ldapmodify -D cn=admin -w S3CR3T -f change.ldif"),
    ("flag", "ldapadd -w", "ldapadd -D cn=admin -w S3CR3T -f entry.ldif"),
    ("flag", "ldapdelete -w", "ldapdelete -D cn=admin -w S3CR3T uid=me"),
    ("flag", "ldapwhoami -w", "ldapwhoami -D cn=admin -w S3CR3T"),
    ("flag", "ldappasswd -w", "ldappasswd -D cn=admin -w S3CR3T uid=me"),
    ("flag", "ldappasswd -s", "ldappasswd -D cn=admin -W -s S3CR3T uid=me"),  # the new password
    ("flag", "ldappasswd -a", "ldappasswd -D cn=admin -W -a S3CR3T uid=me"),  # the old one
    ("flag", "mongosh -p", "mongosh -u me -p S3CR3T"),
    ("flag", "mongo -p", "mongo -u me -p S3CR3T"),
    ("flag", "mongodump -p", "mongodump -u me -p S3CR3T --db shop"),
    ("flag", "mongorestore -p", "mongorestore -u me -p S3CR3T dump/"),
    ("flag", "zip -P", "zip -P S3CR3T a.zip f"),
    ("flag", "unzip -P", "unzip -P S3CR3T a.zip"),
    ("joined", "7z -p", "7z a -pS3CR3T a.7z f"),
    ("joined", "rar -p", "rar a -pS3CR3T a.rar f"),
    ("flag", "sqlcmd -P", "sqlcmd -S host -U sa -P S3CR3T"),
    ("flag", "bcp -P", "bcp shop.dbo.t out t.dat -U sa -P S3CR3T"),
    ("flag", "az login -p", "az login -u me -p S3CR3T"),
    ("flag", "az login --password", "az login -u me --password S3CR3T"),
    ("flag", "twine upload -p", "twine upload -u __token__ -p S3CR3T dist/x.whl"),
    ("flag", "gh secret --body", "gh secret set NAME --body S3CR3T"),
    ("next", "openssl -k", "openssl enc -aes-256-cbc -k S3CR3T -in f -out f.enc"),
    ("next", "openssl -pass", "openssl enc -d -pass pass:S3CR3T -in f.enc"),
    ("next", "openssl -passin", "openssl rsa -passin pass:S3CR3T -in key.pem"),
    ("next", "openssl -passout", "openssl genrsa -aes256 -passout pass:S3CR3T 2048"),
    ("next", "openssl -K", "openssl enc -aes-256-cbc -K S3CR3T -iv 0a1b -in f"),  # a raw key, in hex (`-iv`: no secret)
    ("next", "openssl ca -key", "openssl ca -key S3CR3T -in req.csr"),  # the CA key's password (others' `-key`: a file)
    ("next", "openssl dgst -hmac", "openssl dgst -sha256 -hmac S3CR3T f"),  # the key (`speed -hmac`: a digest)
    ("next", "openssl s_client -psk", "openssl s_client -psk S3CR3T -connect h:443"),
    ("next", "openssl s_server -psk", "openssl s_server -psk S3CR3T"),
    ("next", "keytool -storepass", "keytool -list -keystore k.jks -storepass S3CR3T"),  # (`-storepass:env VAR`: kept)
    ("next", "keytool -keypass", "keytool -genkeypair -alias a -keypass S3CR3T"),
    ("next", "keytool -srcstorepass", "keytool -importkeystore -srcstorepass S3CR3T"),
    ("next", "keytool -deststorepass", "keytool -importkeystore -deststorepass S3CR3T"),
    ("next", "keytool -srckeypass", "keytool -importkeystore -srckeypass S3CR3T"),
    ("next", "keytool -destkeypass", "keytool -importkeystore -destkeypass S3CR3T"),
    ("next", "keytool -signerkeypass", "keytool -genkeypair -signer ca -signerkeypass S3CR3T"),
    ("next", "keytool -new", "keytool -storepasswd -new S3CR3T"),  # the new password of `-storepasswd`, `-keypasswd`
    ("operand", "openssl passwd -salt -in -rand -writerand -provider -provider-path -propquery",
     "openssl passwd -6 -salt ab S3CR3T"),
    ("argument", "mysqladmin password -u -h -P -S --user --host --port --socket", "mysqladmin -u root password S3CR3T"),
    ("argument", "mysqladmin old-password -u -h -P -S --user --host --port --socket", "mysqladmin old-password S3CR3T"),
    ("argument", "vault login -method -path -address -namespace", "vault login S3CR3T"),  # the token (key=value: by name)
    ("operand", "rabbitmqctl add_user -n --node", "rabbitmqctl add_user me S3CR3T"),  # the user too: no way to tell
    ("operand", "rabbitmqctl change_password -n --node", "rabbitmqctl change_password me S3CR3T"),
    ("percent", "smbclient -U", "smbclient -U me%S3CR3T //host/share"),
    ("percent", "smbclient --user", "smbclient --user=me%S3CR3T //host/share"),
    ("percent", "rpcclient -U", "rpcclient -U me%S3CR3T host"),
    ("percent", "rpcclient --user", "rpcclient --user me%S3CR3T host"),
    ("percent", "net -U", "net rpc info -U me%S3CR3T"),
    ("percent", "net --user", "net ads join --user=me%S3CR3T"),
    ("percent", "smbcacls -U", "smbcacls //host/share f -U me%S3CR3T"),
    ("flag", "smbtar -p", "smbtar -s host -x share -u me -p S3CR3T"),
    ("last", "htpasswd b", "htpasswd -b .htpasswd me S3CR3T"),
    ("user", "-u", "tool -u admin:S3CR3T https://example.invalid/"),
    ("user", "--user", "tool --user admin:S3CR3T"),
    ("user", "--proxy-user", "tool --proxy-user admin:S3CR3T"),
    ("user", "--proxy", "pip install --proxy admin:S3CR3T@proxy.example:3128 pkg"),  # `[user:secret@]host:port`
    ("setting", "set", "aws configure set aws_secret_access_key S3CR3T"),
    ("path", "hooks.slack.com/services/*/*/", "https://hooks.slack.com/services/T000/B000/S3CR3T"),
    ("path", "hooks.slack.com/workflows/*/*/*/", "https://hooks.slack.com/workflows/T000/A000/123/S3CR3T"),
    ("path", "hooks.slack.com/triggers/*/*/", "https://hooks.slack.com/triggers/T000/123/S3CR3T"),
    ("path", "api.telegram.org/bot*:", "https://api.telegram.org/bot123456:S3CR3T/sendMessage"),
    ("path", "api.telegram.org/file/bot*:", "https://api.telegram.org/file/bot123456:S3CR3T/photos/f.jpg"),
    ("path", "discord.com/api/webhooks/*/", "https://discord.com/api/webhooks/123/S3CR3T"),
    ("path", "discord.com/api/v*/webhooks/*/", "https://discord.com/api/v10/webhooks/123/S3CR3T/slack"),
    ("path", "discordapp.com/api/webhooks/*/", "https://discordapp.com/api/webhooks/123/S3CR3T?wait=true"),
    # Teams' incoming webhooks (`ORG.webhook.office.com`): the key, and the signature the 2025 URLs end with
    ("path", "webhook.office.com/webhookb2/*/IncomingWebhook/",
     "https://org.webhook.office.com/webhookb2/G0@T0/IncomingWebhook/S3CR3T/C0"),
    ("path", "webhook.office.com/webhookb2/*/IncomingWebhook/*/*/",
     "https://org.webhook.office.com/webhookb2/G0@T0/IncomingWebhook/K0/C0/S3CR3T"),
)


# Programs whose flags holding a secret word mostly name none: the words that make one of their flags a secret's.
# openssl's `-keyout key.pem`, `-newkey rsa:2048`, `-signature sig.bin` name files and key specs; its secrets are
# pass phrases (`-passin`, `-keypass`, `-srppass`, `-proxy_pass`), `-secret`s and the table's flags (`-k`, `-K`,
# `ca -key`). keytool's are the table's flags only: `-keystore k.jks`, `-keyalg RSA`, its `-storepasswd` command
_FLAG_WORDS = {"openssl": ("pass", "secret"), "keytool": ()}
# Their flags holding one of those words that take no value (openssl pkcs12's `-twopass`: asks for two passwords)
_NO_VALUE_FLAGS = frozenset(("-twopass",))


def _read_table(patterns, flag_words: dict) -> tuple:
    """The table as the functions below read it, in one loop (a function's: this runs in every traced
    process at start-up)."""
    words, names, prefixes, user_flags = [], set(), [], set()
    forms = []  # (program, subcommand or "", flag, kind) of each program's flag
    flags: dict = {}  # program -> {flag: kind}
    subcommand_flags: dict = {}  # program -> {subcommand: {flag: kind}}: its secret flags once the subcommand is seen
    last: dict = {}  # program -> the letters whose option makes the last word a secret
    operands: dict = {}  # program -> {subcommand: (the options taking a value, whether every other word is a secret)}
    marks: dict = {}  # program -> what free text holding one of its flags holds (`_might_hold_secret`)
    path_forms: dict = {}  # host -> ((a `path` form's path split at each `*`), ...)
    for kind, pattern, _ in patterns:
        if kind == "word":
            words.append(pattern)
        elif kind == "name":
            names.add(pattern)
        elif kind == "prefix":
            prefixes.append(pattern)
        elif kind == "user":
            user_flags.add(pattern)
        elif kind == "last":
            program, _, letter = pattern.partition(" ")
            last[program] = last.get(program, "") + letter
            marks.setdefault(program, []).append("-")
        elif kind in ("operand", "argument"):
            program, subcommand, *options = pattern.split(" ")
            operands.setdefault(program, {})[subcommand] = (frozenset(options), kind == "operand")
            subcommand_flags.setdefault(program, {}).setdefault(subcommand, {})  # argv finds it as the others
            marks.setdefault(program, []).append(subcommand)
        elif kind == "path":
            host, _, path = pattern.partition("/")
            path_forms.setdefault(host, []).append(tuple(("/" + path).split("*")))
        elif kind != "setting":  # flag, joined, next, percent
            parts = pattern.split(" ")
            program, flag = parts[0], parts[-1]
            if len(parts) == 3:
                forms.append((program, parts[1], flag, kind))
                subcommand_flags.setdefault(program, {}).setdefault(parts[1], {})[flag] = kind
            else:
                forms.append((program, "", flag, kind))
                flags.setdefault(program, {})[flag] = kind
            marks.setdefault(program, []).append(flag if kind != "percent" else "%")
    for program in flag_words:
        marks.setdefault(program, []).extend(flag_words[program])
    for program, subcommands in subcommand_flags.items():  # its program's flags too (`openssl ca -passin env:VAR`)
        for subcommand, own in subcommands.items():
            subcommands[subcommand] = {**flags.get(program, {}), **own}
    return (tuple(words), frozenset(names), tuple(prefixes), frozenset(user_flags), tuple(forms), flags,
            subcommand_flags, last, operands, tuple(marks.items()), path_forms)


(_SECRET_WORDS, _SECRET_NAMES, _SECRET_PREFIXES, _USER_FLAGS, _FLAG_FORMS, _FLAGS, _SUBCOMMAND_FLAGS, _LAST,
 _OPERANDS, _FLAG_MARKS, _PATH_FORMS) = _read_table(PATTERNS, _FLAG_WORDS)
# Programs whose `-u`/`--user` is no `user:secret` (`user:group`, or a flag of no value before a
# `host:path`): the `user` kind skips them.
_NO_USER_SECRET = frozenset(("docker", "podman", "nerdctl", "buildah", "runc", "crun", "sudo", "rsync", "cp", "mv"))
# What free text holding a program's flag or a `user` flag holds (`_might_hold_secret`): the program or the flag,
# then the flag or the `user` flag and what may follow it (looked for once the first is there: few texts hold it);
# sudo and its `-S` (`echo X | sudo -S cmd`: its password from stdin)
_TWO_MARKS = _FLAG_MARKS + tuple((flag, tuple(flag + after for after in " \t=,'\"")) for flag in sorted(_USER_FLAGS)) \
    + (("sudo", ("S",)),)
# The hosts of `path` forms, looked for in a URL (every HTTP request's: most name none) or free text as
# the fewest short texts: `discord` for discord.com and discordapp.com. A `path` form of another host adds its
# mark here (the table's test of its example fails without).
_PATH_MARKS = ("api.telegram", "discord", "hooks.slack", "webhook.office")
# openssl's `-pass*` values that say where the secret is, not what it is (`env:VAR`, `file:PATH`): kept
_PASS_SOURCES = ("env:", "file:", "fd:", "stdin")
# What else free text holding a secret holds: `name=` of a secret name (in its lower case), an API
# key's prefix, a `path` form's host, a percent-encoded URL's `@` (`?next=https%3A%2F%2Fme%3AX%40h`)
_NAME_MARKS = tuple(name + "=" for name in _SECRET_NAMES)
_VALUE_MARKS = _SECRET_PREFIXES + _PATH_MARKS + ("%40",)
# Programs whose `set` is no `set NAME VALUE` of a secret (gsettings' schemas: `org.gnome.desktop.session`)
_NO_SETTING = frozenset(("gsettings",))
# Programs taking several commands in one line, any of them a subcommand of the table (`mysqladmin status
# password X`): argv and free text look for it past the first word that is no option
_COMMAND_LISTS = frozenset(("mysqladmin",))
# The endings of names that say where a secret is, or that it is read from stdin (`--password-file PATH`, gpg's
# `--passphrase-fd 0`, `POSTGRES_PASSWORD_FILE=/run/secrets/db`, docker's `--password-stdin`, of no value): no
# secret's names
_SOURCE_ENDINGS = ("file", "fd", "stdin")
SECRET_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                            "api-key", "x-auth-token", "x-csrf-token", "x-amz-security-token"))


def is_secret_name(name: str) -> bool:
    """A flag, variable, parameter, header or key whose value is a secret."""
    lowered = name.lower()
    if lowered in _SECRET_NAMES:
        return True
    for word in _SECRET_WORDS:  # a loop, not any(generator): half the time, and every header and key passes here
        if word in lowered:
            return not lowered.endswith(_SOURCE_ENDINGS)
    return False


def _looks_like_secret_value(value: str) -> bool:
    return value.startswith(_SECRET_PREFIXES) and len(value) > 6


# Patterns for secrets in free text: [what the text holds (one of them, in lower case; "" for any text) if the
# pattern may match it, its source, what a match of it becomes, the pattern compiled once a text needed it,
# None or, for a pattern whose match starts at a program's name (one match a command each pass), the flag it
# redacts: it runs again while the text holds that more often than it redacted ("": an operand, each word)]
_patterns: list = []

def _free_text_patterns() -> list:
    """`_patterns`, made on first need only (secret_text.py, of the lazy bundle: ~17 KB of code that most
    processes never run, out of the start-up bundle every traced process reads)."""
    if not _patterns:
        from .secret_text import free_text_patterns

        _patterns.extend(free_text_patterns())  # at once: a thread may be reading it
    return _patterns


def _might_hold_secret(value: str) -> bool:
    """Whether free text may hold a secret any pattern finds (plain loops: `any` over a generator costs
    twice as much, and this runs on every argument that is free text)."""
    if "://" in value and "@" in value:
        return True
    lowered = value.lower()
    for word in _SECRET_WORDS:
        if word in lowered:
            return True
    for mark in _NAME_MARKS:
        if mark in lowered:
            return True
    for mark in _VALUE_MARKS:
        if mark in value:
            return True
    for first, then in _TWO_MARKS:
        if first in value:
            for mark in then:
                if mark in value:
                    return True
    return False


def text(value: str) -> str:
    """Free text with every secret-looking value replaced: `Authorization: Bearer X`, `--token X`,
    `KEY=VALUE`, `KEY='VALUE'`, URLs with credentials or secret query values, well-known API key formats."""
    if not _might_hold_secret(value):
        return value
    lowered = value.lower()  # as it came: a redaction (`[REDACTED]`, bracketed) makes no text a pattern needs
    for entry in _free_text_patterns():
        for mark in entry[0]:
            if mark in lowered:
                break
        else:  # the pattern cannot match: neither compiled nor run
            continue
        if entry[3] is None:
            import re

            entry[3] = re.compile(entry[1])
        value, found = entry[3].subn(entry[2], value)
        if entry[4] is not None:  # one match a command each pass: again while the flag may be left unredacted
            done = found
            while found and value.count(entry[4]) > done:
                value, found = entry[3].subn(entry[2], value)
                done += found
    return value


def argv(args: list) -> list:
    """A command line with the values of secret flags and secret-looking arguments replaced (bytes
    that are not UTF-8 kept, as surrogates: the span file escapes them)."""
    out = []
    redact_next = False
    source_next = False  # the value redact_next redacts may say where the secret is (`-passin env:VAR`)
    program = str(args[0]).rpartition("/")[2] if args else ""
    flags = _FLAGS.get(program, {})
    subcommands = _SUBCOMMAND_FLAGS.get(program)  # docker's: its `login -p` is a password, its `run -p` a port
    after_option = True  # the word before was the program or an option (this word may be its value)
    user_flags = _USER_FLAGS if program not in _NO_USER_SECRET else ()
    flag_words = _FLAG_WORDS.get(program)  # openssl's: its `-keyout key.pem` is no secret
    user_next = False
    percent_next = False
    setting = 0  # 1: after `set`; 2: after `set NAME`, NAME a secret's
    operands_at = 0  # where an `operand` form's subcommand is in `out`
    for arg in args:
        if isinstance(arg, bytes):
            arg = arg.decode("utf-8", "surrogateescape")
        else:
            arg = str(arg)
        if redact_next:
            redact_next = False
            if source_next and arg.startswith(_PASS_SOURCES):
                out.append(arg)
            else:
                out.append(_flag_value(arg))
            continue
        if user_next:
            user_next = False
            if _is_user_secret(arg):
                out.append(_flag_value(arg))
                continue
        if percent_next:
            percent_next = False
            if "%" in arg:
                out.append(_percent_value(arg))
                continue
        if setting:
            if setting == 2 and not arg.startswith("-"):  # `set NAME VALUE`
                out.append(REDACTED)
                setting = 0
                continue
            setting = 2 if setting == 1 and not arg.startswith("-") and is_secret_name(arg.rpartition(".")[2]) else 0
        if subcommands is not None:
            if arg.startswith("-"):
                after_option = True
            else:
                found = subcommands.get(arg)
                if found is not None:
                    flags = found
                    subcommands = None
                    if arg in _OPERANDS.get(program, ()):
                        operands_at = len(out)
                elif not after_option and program not in _COMMAND_LISTS:  # another subcommand
                    subcommands = None
                after_option = False
        if flags and arg.startswith("-"):
            flag = _program_flag(arg, flags)
            if flag is not None:
                kind = flags[flag]
                sources = kind == "next" and flag.startswith("-pass")  # its value may say where the secret is
                if flag == arg:
                    out.append(arg)
                    if kind == "percent":
                        percent_next = True
                    else:
                        redact_next = True
                        source_next = sources
                else:
                    joined = arg[len(flag):]
                    glue = "=" if joined.startswith("=") else ""
                    joined = joined[len(glue):]
                    if kind == "percent":
                        out.append(flag + glue + _percent_value(joined) if "%" in joined else arg)
                    elif sources and joined.startswith(_PASS_SOURCES):
                        out.append(arg)
                    else:
                        out.append(flag + glue + _flag_value(joined))
                continue
        if flag_words is not None and arg.startswith("-"):  # its flags holding its words only, joined by `=` too
            name, eq, value_ = arg.partition("=")
            if name not in _NO_VALUE_FLAGS and _holds_word(name, flag_words):
                if eq:
                    out.append(arg if value_.startswith(_PASS_SOURCES) else name + eq + _flag_value(value_))
                else:
                    out.append(arg)
                    redact_next = True
                    source_next = True  # openssl's pass phrase arguments (`-passcerts env:VAR`)
                continue
            if "." not in name:  # its own flag (`-keyout=key.pem`, keytool's `-keypass:env`), not `-J-Dx.password=X`
                out.append(name + eq + _argument(value_) if eq else arg)
                continue
        if arg.startswith("-") and "=" not in arg and is_secret_name(arg.lstrip("-")) and not arg.startswith("--no-"):
            out.append(arg)
            redact_next = True
            source_next = False
            continue
        if user_flags and arg.startswith("-"):
            if arg in user_flags:
                out.append(arg)
                user_next = True
                continue
            flag, eq, value = arg.partition("=")
            if eq and flag in user_flags and _is_user_secret(value):
                out.append(flag + eq + _flag_value(value))
                continue
        if arg == "set" and program not in _NO_SETTING:
            setting = 1
        out.append(_argument(arg))
    if operands_at:  # `openssl passwd -salt ab X`: each word after it no option nor a listed option's value
        options, every = _OPERANDS[program][out[operands_at]]
        option_value = False
        for at in range(operands_at + 1, len(out)):
            if out[at].startswith("-"):
                option_value = out[at] in options
            elif option_value:
                option_value = False
            else:
                out[at] = REDACTED
                if not every:  # `mysqladmin password X flush-hosts`: the first one only
                    break
    if program in _LAST and len(out) > 2 and not out[-1].startswith("-"):  # `htpasswd -b FILE USER X`
        letters = _LAST[program]
        for arg in out[1:-1]:
            if arg.startswith("-") and not arg.startswith("--") and any(letter in arg for letter in letters):
                out[-1] = REDACTED
                break
    return out


def _holds_word(name: str, words) -> bool:
    """Whether a flag's name holds one of a program's words (`_FLAG_WORDS`)."""
    lowered = name.lower()
    for word in words:
        if word in lowered:
            return True
    return False


def _is_user_secret(value: str) -> bool:
    """`user:secret` (not `uid:gid`, `host:port`, `host:/path` or a URL): the value of a `user` flag to redact."""
    user, colon, secret = value.partition(":")
    return bool(colon and user and secret and not secret.isdigit() and not secret.startswith(("/", "~"))
                and "/" not in user and "@" not in user and " " not in user)


def _program_flag(arg: str, flags: dict) -> str | None:
    """The program's secret flag `arg` is, or starts with (joined value; `next`: by `=` only), or None."""
    for flag, kind in flags.items():
        if arg == flag:
            if kind != "joined":
                return flag
        elif arg.startswith(flag) and (arg[len(flag)] == "=" or len(flag) == 2 and kind != "next"):
            return flag
    return None


def _percent_value(value: str) -> str:
    """A samba `user%secret`: the user kept."""
    return value.partition("%")[0] + "%" + REDACTED


def _flag_value(value: str) -> str:
    """A secret flag's value: `user:secret` keeps its user."""
    user, colon, _ = value.partition(":")
    return user + colon + REDACTED if colon and "/" not in user else REDACTED


def header(name: str, value: str) -> str:
    """An HTTP header's value as it may be recorded."""
    return REDACTED if name.lower() in SECRET_HEADERS or is_secret_name(name) else text(value)


def attributes(values: dict) -> dict:
    """Span attributes from elsewhere (another instrumentation, the program's OpenTelemetry spans):
    secret keys' values replaced, the others as `value` gives them."""
    out = {}
    for key, value in values.items():
        if isinstance(key, str) and is_secret_name(key.rpartition(".")[2]):
            out[key] = REDACTED
        else:
            out[key] = attribute(value)
    return out


def value(text_: str) -> str:
    """One string of free text or a URL (an attribute's value, a span's name), redacted."""
    if "://" in text_ and not (" " in text_ or "\n" in text_ or "\t" in text_ or "\r" in text_):  # a URL alone
        return url(text_)
    return text(text_)


def attribute(item):
    """An attribute's value of any type, redacted: a string as `value` does; a list of strings as a
    command line (`["--password", "X"]`), other lists item by item; a dict as `attributes`; a number
    as it is; any other object as its text would be recorded (str())."""
    if isinstance(item, str):
        return value(item)
    if item is None or isinstance(item, (int, float)):  # bool is an int
        return item
    if isinstance(item, (list, tuple)):
        if item and all(isinstance(part, str) for part in item):
            out = argv(list(item))
        else:
            out = [attribute(part) for part in item]
        return tuple(out) if isinstance(item, tuple) else out  # the SDK's tuples stay tuples
    if isinstance(item, dict):
        return attributes(item)
    return value(str(item))


# What makes an ASCII argument free text: whitespace (str.isspace's ASCII characters), quotes, brackets, separators.
_TEXT_MARKS = frozenset(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\"'(),;")


def _argument(arg: str) -> str:
    """One argument: string operations for the usual shapes (`--flag=value`, `KEY=VALUE`, a URL, a
    bare key), the patterns of `text` only for free text (a `-c` program, a shell command)."""
    if (not _TEXT_MARKS.isdisjoint(arg) if arg.isascii()  # one C call (a generator over the characters: ~0.6 us)
            else any(c.isspace() or c in "\"'(),;" for c in arg)):
        return text(arg)
    separator = "=" if "=" in arg else ":"
    name, sep, value_ = arg.partition(separator)
    if "://" in arg:  # a URL, or NAME=URL: the URL's secrets, then the name's
        arg = url(arg)
        if sep == "=" and "://" not in name and "/" not in name and is_secret_name(name.lstrip("-")):
            return name + sep + REDACTED
        return arg
    if sep and value_ and value_ != REDACTED and (is_secret_name(name.lstrip("-")) or _looks_like_secret_value(value_)):
        return name + sep + REDACTED
    if sep == "=" and "=" in value_:  # an assignment as a flag's value: `--env=DB_PASSWORD=x`, `--build-arg=TOKEN=x`
        return name + sep + _argument(value_)
    if _looks_like_secret_value(arg):
        return REDACTED
    return arg


def url(value_: str) -> str:
    """A URL without user:password@ and without the values of secret parameters in its query and its
    fragment (`#access_token=X&state=Y`, an OAuth implicit grant's; `#/route?token=X`)."""
    if "@" not in value_ and "?" not in value_ and "#" not in value_:  # nothing to redact (every HTTP request passes here)
        for host in _PATH_MARKS:  # unless a webhook's secret is in its path
            if host in value_:
                break
        else:
            return value_
    scheme, sep, rest = value_.partition("://")
    if not sep:
        return value_
    rest, hash_, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    authority_end = rest.find("/")
    if authority_end < 0:
        authority_end = len(rest)
    authority, path = rest[:authority_end], rest[authority_end:]
    if "@" in authority:
        authority = REDACTED + "@" + authority.rsplit("@", 1)[1]
    host = authority.rpartition("@")[2].partition(":")[0].lower()
    forms = _PATH_FORMS.get(host) or _PATH_FORMS.get(host.partition(".")[2])  # `ptb.discord.com` too
    if forms:
        path = _path_secret(path, forms)
    if question:
        query = query_string(query)
    if hash_ and "=" in fragment:
        head, mark, params = fragment.rpartition("?")
        fragment = head + mark + query_string(params)
    return scheme + sep + authority + path + question + query + hash_ + fragment


def _path_secret(path: str, forms) -> str:
    """A URL's path with the segment after each `path` form's marker replaced (`*`: one segment's text; every
    form, not the first that matches: once Teams' key is redacted, its signature still is)."""
    for parts in forms:
        if not path.startswith(parts[0]):
            continue
        at = len(parts[0])
        for part in parts[1:]:  # `*` then this text, within the segment
            found = path.find(part, at + 1)
            if found < 0 or "/" in path[at:found]:
                break
            at = found + len(part)
        else:
            end = path.find("/", at)
            if end < 0:
                end = len(path)
            if end > at and path[at:end] != REDACTED:
                path = path[:at] + REDACTED + path[end:]
    return path


def query_string(value_: str) -> str:
    """`a=1&api_key=X` (a URL query or a form body) with the values of secret parameters replaced
    (`;` separates parameters too: `a=1;token=X`)."""
    params = []
    for item in value_.split("&"):
        params.append(";".join([_parameter(part) for part in item.split(";")]) if ";" in item else _parameter(item))
    return "&".join(params)


def _parameter(item: str) -> str:
    name, eq, val = item.partition("=")
    if not eq or val == REDACTED:
        return item
    decoded = _unquote(val)
    if is_secret_name(_unquote(name)) or _looks_like_secret_value(decoded):
        return name + eq + REDACTED
    if "@" in decoded and "://" in decoded:  # a URL as the value (`?next=https://me:X@h/`), percent-encoded too
        inner = url(decoded)
        if inner != decoded:
            return name + eq + (inner if decoded == val else REDACTED)
    return item


def _unquote(text_: str) -> str:
    """%XX and + decoded (ASCII's worth: enough to read a parameter's name, `api%5Fkey`), without urllib."""
    if "%" not in text_ and "+" not in text_:
        return text_
    parts = text_.replace("+", " ").split("%")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:2]
        if len(code) == 2 and all(c in "0123456789abcdefABCDEF" for c in code):
            out.append(chr(int(code, 16)) + part[2:])
        else:
            out.append("%" + part)
    return "".join(out)


def _names_a_secret(object_: dict) -> bool:
    """Whether a name-value object names a secret: a `...name` or `...key` key holding a secret's name (Kubernetes'
    `{"name": "DB_PASSWORD", "value": X}`, AWS's `{"Key": "api_key", "Value": X}`)."""
    for key, item in object_.items():
        if (isinstance(key, str) and isinstance(item, str) and key.lower().endswith(("name", "key"))
                and is_secret_name(item)):
            return True
    return False


def structure(value_):
    """Parsed JSON (dicts, lists, strings) with the values of secret keys and secret-looking strings replaced, and
    those of pairs as free text reads them: a name-value object's (`{"name": "DB_PASSWORD", "value": X}`), a pair
    among a list's items (`[["password", X]]`)."""
    if isinstance(value_, dict):
        named = _names_a_secret(value_)
        return {k: REDACTED if isinstance(k, str) and (is_secret_name(k) or named and k.lower().endswith("value"))
                else structure(v) for k, v in value_.items()}
    if isinstance(value_, list):
        return [[item[0], REDACTED] if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and is_secret_name(item[0]) else structure(item) for item in value_]
    if isinstance(value_, str):
        return text(value_)
    return value_
