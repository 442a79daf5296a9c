"""Create a Tryton database for the order flows: modules, company, chart, fiscal year, products.

Run in a child process (`python -m adapters.erp.tryton.setup ...`), never in the service:
trytond keeps process-wide state (its config, pools, caches) that must not leak into the
service or the test process. SQLite keeps a database in one file, so a created database
is cached as a template file keyed by what went into it (modules, SKUs, year, trytond
version) and later set-ups of the same kind are a file copy (about 20-40 s the first time,
well under a second from the cache).

Accounting is the minimum Tryton needs to confirm a sale with invoices on order: the
minimal chart from `account` and one product category carrying its revenue / expense
accounts. Taxes are not Tryton taxes: the flow posts Shopify's computed tax as a line on
the `TAX` service product so the sale's total is Shopify's total (docs/flows.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

#: modules activated (their dependencies come along)
MODULES = ("sale", "stock", "account_invoice", "account_invoice_stock", "party", "company")
#: service products for lines that are not catalogue goods
SERVICE_PRODUCTS = {
    "SHIPPING": "Shipping",
    "DISCOUNT": "Discount",
    "TAX": "Sales tax (as computed by the shop)",
    "MISC": "Other line (no SKU)",
}
#: accounts and journal of the finance posting of Shopify Payments payouts
#: (availability/flows/finance/): code -> (name, kind); kind says which account of the
#: chart lends its type and parent (a current asset like cash, or an expense)
FINANCE_ACCOUNTS = {
    "SP-CLEARING": ("Shopify Payments clearing (captured, not paid out yet)", "cash"),
    "SP-BANK": ("Bank account receiving Shopify payouts", "cash"),
    "SP-RESERVE": ("Shopify Payments reserve (funds held back)", "cash"),
    "SP-FEES": ("Payment processing fees (Shopify Payments)", "expense"),
    "SP-CHARGEBACK": ("Chargebacks and dispute losses", "expense"),
}
FINANCE_JOURNAL = "SHOPIFY-PAY"
#: the company's currency, and the other currencies a shop may sell or settle in: code ->
#: (name, symbol, units per 1 USD). Fixed rates, dated from the start of time: the embedded
#: ERP converts foreign-currency sales, credit notes and payouts to the company's books at
#: these; a production Tryton keeps its own rates (by hand or its currency_rate module)
COMPANY_CURRENCY = "USD"
CURRENCIES = {
    "EUR": ("Euro", "€", "0.92"),
    "GBP": ("Pound Sterling", "£", "0.79"),
    "CAD": ("Canadian Dollar", "$", "1.39"),
}
#: bumped when what the set-up creates changes, so an older cached template is not reused
LAYOUT = "3-currencies"
DB_NAME = "availability"
ADMIN = "admin"


class ErpSetupError(RuntimeError):
    pass


def write_config(path: Path, db_dir: Path, *, listen: str = "127.0.0.1:0", uri: str = "sqlite://") -> Path:
    """A trytond configuration file: SQLite under `db_dir` (or the PostgreSQL server of
    `uri`, `postgresql://user@host:port/`; `db_dir` then keeps only Tryton's file store),
    JSON-RPC on `listen`."""
    path.write_text(
        "[database]\n"
        f"uri = {uri}\n"
        f"path = {db_dir}\n"
        "[web]\n"
        f"listen = {listen}\n"
        "[session]\n"
        # the flows log in once and keep their session; a day without calls logs out
        "timeout = 86400\n"
        "max_attempt = 100\n"
    )
    return path


def is_postgresql(uri: str | None) -> bool:
    return bool(uri) and uri.split(":", 1)[0] in ("postgresql", "postgres")


def cache_key(skus: list[str]) -> str:
    import trytond  # noqa: PLC0415 - optional extra

    digest = hashlib.sha256()
    digest.update(f"{trytond.__version__}|{'/'.join(MODULES)}|{dt.date.today().year}|{LAYOUT}|".encode())
    digest.update("\n".join(sorted(set(skus))).encode())
    return digest.hexdigest()[:20]


def create_database(db_dir: Path, skus: list[str], password: str, *, cache_dir: Path | None = None,
                    timeout: float = 600.0, uri: str | None = None, name: str = DB_NAME) -> Path:
    """Create `db_dir/availability.sqlite` (replacing none: fails if it exists), from the
    cache when an equal one was made before. Returns the database file. With a PostgreSQL
    `uri` the database `name` is created on that server instead (`create_pg_database`)."""
    if is_postgresql(uri):
        create_pg_database(db_dir, skus, password, uri=uri, name=name, timeout=timeout)
        return db_dir
    db_dir.mkdir(parents=True, exist_ok=True)
    target = db_dir / f"{DB_NAME}.sqlite"
    if target.exists():
        raise ErpSetupError(f"{target} exists already: the ERP database is set up once")
    cached = None
    if cache_dir is not None:
        cached = cache_dir / f"tryton-{cache_key(skus)}.sqlite"
        if cached.exists():
            shutil.copyfile(cached, target)
            _set_password(db_dir, password, timeout=timeout)
            return target
    _build_in_child(db_dir, skus, password, timeout=timeout)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        shutil.copyfile(target, tmp)
        os.replace(tmp, cached)  # atomic: parallel test runs never read half a template
    return target


def _build_in_child(db_dir: Path, skus: list[str], password: str, *, timeout: float, uri: str = "sqlite://",
                    name: str = DB_NAME) -> None:
    with tempfile.TemporaryDirectory(prefix="av-erp-setup-") as work:
        work_dir = Path(work)
        sku_file = work_dir / "skus.txt"
        sku_file.write_text("\n".join(skus))
        pass_file = work_dir / "pass"
        pass_file.write_text(password)
        _child(["build", str(db_dir), str(sku_file), "--uri", uri, "--name", name], pass_file, timeout=timeout)


def create_pg_database(db_dir: Path, skus: list[str], password: str, *, uri: str, name: str,
                       timeout: float = 600.0) -> None:
    """The database `name` on the PostgreSQL server of `uri`, for Tryton with several
    worker processes (SQLite serialises every write on one file lock). The first set-up of a
    kind is kept as a template database (`avail_tpl_<cache key>`, never dropped here) and
    later ones are a `CREATE DATABASE ... TEMPLATE` copy, as the SQLite file is copied."""
    import psycopg  # noqa: PLC0415 - optional extra (erp-postgresql)
    from psycopg import sql  # noqa: PLC0415

    db_dir.mkdir(parents=True, exist_ok=True)
    template = f"avail_tpl_{cache_key(skus)}"
    with psycopg.connect(_pg_dsn(uri, "postgres"), autocommit=True) as conn:
        have = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname IN (%s, %s)",
                                           (template, name))}
        if name in have:
            raise ErpSetupError(f"database {name} exists already on {uri}: the ERP database is set up once")
        if template not in have:
            conn.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                sql.Identifier(template)))
            try:
                _build_in_child(db_dir, skus, password, timeout=timeout, uri=uri, name=template)
            except BaseException:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(template)))
                raise
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                       sql.Identifier(template)))
    _set_password(db_dir, password, timeout=timeout, uri=uri, name=name)


def drop_pg_database(uri: str, name: str) -> None:
    """Drop a database this code created (a benchmark's own); never a template or another's."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    if name.startswith("avail_tpl_"):
        raise ErpSetupError("template databases are kept")
    with psycopg.connect(_pg_dsn(uri, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _pg_dsn(uri: str, dbname: str) -> str:
    """Tryton's `postgresql://user@host:port/` with a database name, for psycopg."""
    return uri.rstrip("/") + "/" + dbname


def _set_password(db_dir: Path, password: str, *, timeout: float, uri: str = "sqlite://",
                  name: str = DB_NAME) -> None:
    with tempfile.TemporaryDirectory(prefix="av-erp-pass-") as work:
        pass_file = Path(work) / "pass"
        pass_file.write_text(password)
        _child(["password", str(db_dir), "--uri", uri, "--name", name], pass_file, timeout=timeout)


def _child(args: list[str], pass_file: Path, *, timeout: float) -> None:
    env = dict(os.environ, TRYTONPASSFILE=str(pass_file))
    proc = subprocess.run([sys.executable, "-m", "adapters.erp.tryton.setup", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ErpSetupError(f"Tryton set-up failed ({proc.returncode}): {proc.stderr[-4000:]}")


# --- what runs in the child process -----------------------------------------------------------


def _backend(uri: str) -> None:
    """trytond picks its database backend when `trytond.backend` is first imported (the
    test tools below import it before proteus reads the config file): name it first."""
    os.environ["TRYTOND_DATABASE_URI"] = uri


def _build(db_dir: Path, skus: list[str], uri: str = "sqlite://", name: str = DB_NAME) -> None:
    _backend(uri)
    conf = write_config(db_dir / "setup.conf", db_dir, uri=uri)
    if not is_postgresql(uri):
        (db_dir / f"{name}.sqlite").touch()
    subprocess.run(
        [str(Path(sys.executable).with_name("trytond-admin")), "-c", str(conf), "-d", name,
         "--all", "--activate-dependencies", "-u", *MODULES, "--email", "admin@localhost"],
        check=True, env=os.environ, stdout=subprocess.DEVNULL,
    )
    from proteus import Model, config as pconfig  # noqa: PLC0415 - optional extra
    from trytond.modules.account.tests.tools import create_chart, create_fiscalyear, get_accounts  # noqa: PLC0415
    from trytond.modules.account_invoice.tests.tools import set_fiscalyear_invoice_sequences  # noqa: PLC0415
    from trytond.modules.company.tests.tools import create_company, get_company  # noqa: PLC0415

    cfg = pconfig.set_trytond(database=name, config_file=str(conf))
    Party = Model.get("party.party")
    create_company(party=Party(name="Availability Retail Co"), currency=COMPANY_CURRENCY)
    company = get_company()
    _currencies()
    today = dt.date.today()
    for year in (today.year, today.year + 1):  # orders near New Year still have a period
        fiscalyear = set_fiscalyear_invoice_sequences(create_fiscalyear(company, today=dt.date(year, 6, 1)))
        fiscalyear.click("create_period")
    create_chart(company)
    accounts = get_accounts(company)
    _finance_accounts(accounts)

    Category = Model.get("product.category")
    category = Category(name="Retail", accounting=True)
    category.account_revenue = accounts["revenue"]
    category.account_expense = accounts["expense"]
    category.save()
    Uom = Model.get("product.uom")
    unit, = Uom.find([("name", "=", "Unit")])
    Template = Model.get("product.template")

    def product(code: str, name: str, kind: str) -> None:
        template = Template(name=name, code=code, type=kind, default_uom=unit, salable=True,
                            list_price=Decimal("0"), account_category=category)
        template.save()

    for code, name in SERVICE_PRODUCTS.items():
        product(code, name, "service")
    for sku in skus:
        if sku and sku not in SERVICE_PRODUCTS:
            product(sku, sku, "goods")
    _admin_password(cfg)


def _currencies() -> None:
    from proteus import Model  # noqa: PLC0415

    Currency = Model.get("currency.currency")
    Rate = Model.get("currency.currency.rate")
    for code, (name, symbol, rate) in CURRENCIES.items():
        if Currency.find([("code", "=", code)]):
            continue
        currency = Currency(name=name, symbol=symbol, code=code, rounding=Decimal("0.01"))
        currency.save()
        Rate(date=dt.date.min, rate=Decimal(rate), currency=currency).save()


def _finance_accounts(accounts: dict) -> None:
    """The accounts and the journal payouts post to (additive: nothing else changes)."""
    from proteus import Model  # noqa: PLC0415

    Account = Model.get("account.account")
    for code, (name, kind) in FINANCE_ACCOUNTS.items():
        like = accounts[kind]
        Account(name=name, code=code, type=like.type, parent=like.parent, reconcile=False).save()
    Journal = Model.get("account.journal")
    Journal(name="Shopify Payments payouts", code=FINANCE_JOURNAL, type="general").save()


def _admin_password(cfg=None) -> None:
    from proteus import Model  # noqa: PLC0415

    User = Model.get("res.user")
    admin, = User.find([("login", "=", ADMIN)])
    admin.password = Path(os.environ["TRYTONPASSFILE"]).read_text()
    admin.save()


def _password(db_dir: Path, uri: str = "sqlite://", name: str = DB_NAME) -> None:
    _backend(uri)
    from proteus import config as pconfig  # noqa: PLC0415

    conf = write_config(db_dir / "setup.conf", db_dir, uri=uri)
    pconfig.set_trytond(database=name, config_file=str(conf))
    _admin_password()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.erp.tryton.setup")
    parser.add_argument("step", choices=["build", "password"])
    parser.add_argument("db_dir")
    parser.add_argument("sku_file", nargs="?")
    parser.add_argument("--uri", default="sqlite://")
    parser.add_argument("--name", default=DB_NAME)
    args = parser.parse_args(argv)
    db_dir = Path(args.db_dir).resolve()
    if args.step == "build":
        skus = [s.strip() for s in Path(args.sku_file).read_text().splitlines() if s.strip()]
        _build(db_dir, skus, args.uri, args.name)
    else:
        _password(db_dir, args.uri, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
