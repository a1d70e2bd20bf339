"""The portfolio JSON of ``omnimargin risk`` and ``POST /v1/risk``.

::

    {"positions": [{"asset": "BTC", "quantity": 1.5}, {"asset": "ETH", "quantity": -10}],
     "prices": {"BTC": 97443.09},
     "model": {"kind": "gaussian", "daily_vol": {"BTC": 0.03},
               "correlation": {"assets": ["BTC", "ETH"], "matrix": [[1, 0.8], [0.8, 1]]},
               "horizon_days": {"BTC": 2}, "daily_mean": {"BTC": 0.0}, "dof": 5,
               "jumps": [{"name": "bridge-x", "probability": 0.002, "loss": 0.9,
                          "assets": ["SOL"]}]}}

Numbers are read as decimals (never through binary floats) so quantity x price is exact until
the exposure is handed to the engine. Every problem is reported as ``field: reason``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from aggregator.errors import InputError
from aggregator.inputs import load_json, parse_decimal

#: largest |quantity x price| accepted for one position, in USD (10 trillion)
MAX_NOTIONAL_USD = Decimal(10) ** 13
MAX_PRICE_USD = Decimal(10) ** 12

AssetName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._]+$")]
FiniteDecimal = Annotated[Decimal, Field(allow_inf_nan=False)]


def plain_decimal(value: Any) -> Any:
    """A quantity given as a string must be ``[+-]digits[.digits]`` in ASCII (no ``1_000``,
    no other scripts' digits, no spaces, no exponent); JSON numbers are ASCII by JSON's
    grammar and reach here as Decimal already."""
    if isinstance(value, str):
        try:
            return parse_decimal("quantity", value)
        except InputError as exc:
            raise ValueError(exc.reason) from None
    return value


#: a size or quantity: a JSON number, or a string checked by :func:`plain_decimal`
Quantity = Annotated[FiniteDecimal, BeforeValidator(plain_decimal)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Position(_Strict):
    asset: AssetName
    quantity: Quantity

    @field_validator("quantity")
    @classmethod
    def _bounded(cls, v: Decimal) -> Decimal:
        if abs(v) > MAX_NOTIONAL_USD:
            raise ValueError(f"absurd quantity {v:.3e} (more than {MAX_NOTIONAL_USD:.0e} units)")
        return v


class CorrelationSpec(_Strict):
    assets: list[AssetName] = Field(min_length=1)
    matrix: list[list[FiniteFloat]]


class JumpSpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    probability: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    loss: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    assets: list[AssetName] = Field(min_length=1)


class ModelSpec(_Strict):
    kind: Literal["gaussian", "student_t", "historical"] | None = None  # None: --model
    daily_vol: (
        dict[AssetName, Annotated[float, Field(ge=0.0, le=5.0, allow_inf_nan=False)]] | None
    ) = None
    daily_mean: (
        dict[AssetName, Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False)]] | None
    ) = None
    correlation: CorrelationSpec | None = None
    dof: Annotated[float, Field(gt=2.0, le=1e6, allow_inf_nan=False)] | None = None
    horizon_days: (
        dict[AssetName, Annotated[float, Field(gt=0.0, le=365.0, allow_inf_nan=False)]] | None
    ) = None
    jumps: list[JumpSpec] = Field(default_factory=list)


class PortfolioFile(_Strict):
    positions: list[Position] = Field(min_length=1)
    prices: dict[
        AssetName,
        Annotated[
            Decimal,
            Field(gt=0, le=MAX_PRICE_USD, allow_inf_nan=False),
            BeforeValidator(plain_decimal),
        ],
    ] = Field(default_factory=dict)
    model: ModelSpec | None = None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "portfolio"


def first_error(exc: ValidationError, prefix: str = "") -> InputError:
    """One ``field: reason`` line from a pydantic error (the first problem found)."""
    err = exc.errors()[0]
    field = _loc(tuple(err["loc"]))
    if prefix:
        field = f"{prefix}.{field}" if field != "portfolio" else prefix
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    return InputError(field, msg[:1].lower() + msg[1:])


def _reject_constant(name: str) -> Decimal:
    return Decimal("NaN")  # rejected by the field's finiteness check, which names the field


def parse_portfolio(data: Any) -> PortfolioFile:
    """Validate already-decoded JSON (decimals for numbers) into a :class:`PortfolioFile`."""
    try:
        return PortfolioFile.model_validate(data)
    except ValidationError as exc:
        raise first_error(exc) from None


def load_portfolio(path: Path) -> PortfolioFile:
    """Read and validate a portfolio file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError("portfolio", f"cannot read {path} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise InputError("portfolio", reason) from None
    return parse_portfolio(decode_json(text, "portfolio"))


def decode_json(text: str, what: str) -> Any:
    """JSON with numbers as Decimal; NaN/Infinity left for the field checks to reject; a key
    given twice in one object is an error naming the key."""
    return load_json(
        text, what, parse_float=Decimal, parse_int=Decimal, parse_constant=_reject_constant
    )
