"""A swimming-pool water-quality model and the analyzer that reports it.

`PoolModel(device_id, seed).sample(t_ms)` advances the water to true time `t_ms` and returns what
the online analyzer reports then (or None when nothing is sent). Steps may be of any size: the
physics is integrated with Euler sub-steps of at most `SUBSTEP_MAX_S` seconds, so a one-minute
reporting interval costs one sub-step. The model is deterministic given the seed, the device id
and the sequence of `t_ms` (randomness comes from `numpy.random.Generator(PCG64(...))`; the seed is
mixed with a CRC of the device id so that pools sharing a run seed still differ).

Parameters and reasoning (all rates per hour; "load" is the bather load, 1.0 = a busy weekday
evening for an average pool):

Time and bathers
- Local time is Asia/Shanghai, a fixed UTC+8 (no daylight saving since 1991), computed by
  arithmetic so the model needs no tz database.
- Open 06:00-22:00 (`OPEN_HOUR`, `CLOSE_HOUR`); load is 0 when closed. Weekdays: a base of 0.15,
  an early-morning peak (07:00, before work), a small lunch peak (12:30) and the evening peak
  (19:30). Weekends: higher all day, with an afternoon peak (15:00) of families. Each day gets a
  random factor 0.8-1.15 (weather, holidays) and each pool a size/popularity factor 0.7-1.1.

Free chlorine (setpoint 0.55-0.7 mg/L per pool, GB 37488-2019 range 0.3-1.0)
- First-order decay k = 0.04 * 1.07^(T-27) + 0.45 * load + 0.35 * sun. The 0.04 base is the slow
  loss of a covered pool at night; the temperature factor is the usual ~7 %/degC for chlorine
  demand; bathers (sweat, urine, cosmetics) dominate by day, so without dosing a busy pool halves
  its chlorine in about 1.5-2 h; sunlight photolysis applies outdoors only and assumes the water
  is stabilised with cyanuric acid (unstabilised chlorine would lose half in under an hour).
- A PI controller (Kp 4, Ki 5 per hour, conditional integration as anti-windup) drives a
  sodium hypochlorite pump of 1.0 mg/L/h capacity (about 1.5 times the worst clean demand, an
  outdoor pool on a sunny weekend evening); the dose reaches the pool water through a
  first-order mixing lag of 10 min (circulation loop), which with load changes keeps the
  chlorine moving around the setpoint rather than flat. After a long pump failure the catch-up
  overshoots to about 0.9 mg/L and, at night, stays there for hours: chlorine can only be added.
  The controller reads its own probe (the true value): sensor faults do not feed back into the
  dosing.

Combined chlorine: chloramines form in proportion to load x free chlorine (0.035 per hour) and
are removed towards a floor of 0.08 mg/L (UV, dilution with fresh water, breakpoint) at 0.15 per
hour, so they build up over busy hours and peak in the evening near 0.2 mg/L (limit 0.4).

pH (setpoint 7.3-7.5, limit 7.0-7.8): drifts up by CO2 outgassing (0.015/h, more with bathers
splashing: +0.02/h at full load) and with hypochlorite dosing (its excess caustic soda: 0.03 pH per
mg/L dosed); an acid-dosing PI controller (max 0.3 pH/h) can only push it down, which is how real
pools are run.

ORP: Nernst-like, ORP = E0 + 150 mV * log10(HOCl) with HOCl = free chlorine / (1 + 10^(pH-7.5))
(hypochlorous acid pKa 7.5), E0 chosen so 0.6 mg/L at pH 7.4 reads 725 mV, plus a per-pool
electrode offset (sd 6 mV). The 150 mV/decade slope is steeper than the ideal Nernst slope, as
pool ORP probes are in practice; it makes 650 mV (the GB 37488 limit) fall near 0.2 mg/L free
chlorine at pH 7.4, in line with the standard treating both limits as the same disinfection
requirement. HOCl is floored at 0.005 mg/L so chlorine-free water reads ~450 mV rather than
minus infinity. The electrode follows with a 2-minute lag.

Turbidity: a source of 0.2 NTU (plus 0.35 NTU at full load) times the filtration rate, and
filtration removing 60 % per pass at a 4-hour turnover (0.15 per hour), so a clean pool sits near
0.2 NTU at night and 0.3-0.5 NTU in the evening (limit 1 NTU).

Temperature: indoors, heated towards 26-28 degC with a +-0.25 degC daily swing (hall air) and a
3-hour response; outdoors, towards a daily cycle (mean 25-28 degC per pool, +-2.5 degC, peak of the
driver at noon) through a 5-hour thermal lag, so the water peaks mid-afternoon at about +-1.5 degC,
with day-to-day weather changes of the mean.

Process noise (random walk per sqrt(hour)): free chlorine 0.02 mg/L, pH 0.01, turbidity 0.01 NTU,
temperature 0.05 degC. Sensor noise (one standard deviation) and resolution: free and combined
chlorine 0.02 and 0.01 mg/L, pH 0.01 and 0.01, ORP 3 and 1 mV, turbidity 0.02 and 0.01 NTU,
temperature 0.05 and 0.1 degC. Because of the 0.1 degC resolution a heated indoor pool reports
the same temperature for long stretches: that is realistic and a trap for naive stuck detectors.

Faults (see simulators/faults.py) act either on the physics (inside the sub-steps) or on the
reported sample, in this order: sensor noise and rounding; drift, stuck and calibration in the
order the faults are given; replay; analyzer off and connectivity (None); clock skew (reported
timestamp). The random streams are
drawn the same way with or without faults, so a faulted run equals its clean twin outside the
fault's effects.
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simulators.faults import POOL_PARAMETERS, Fault, FaultKind

MS_PER_S = 1000
MS_PER_H = 3_600_000
MS_PER_DAY = 24 * MS_PER_H
LOCAL_OFFSET_MS = 8 * MS_PER_H  # Asia/Shanghai, fixed UTC+8
OPEN_HOUR = 6.0
CLOSE_HOUR = 22.0
SUBSTEP_MAX_S = 60

# Chlorine physics and dosing.
CL_DECAY_BASE = 0.04
CL_DECAY_THETA = 1.07
CL_DECAY_LOAD = 0.45
CL_DECAY_SUN = 0.35
CL_PUMP_MAX = 1.0
CL_MIX_TAU_H = 1.0 / 6.0
CL_KP = 4.0
CL_KI = 5.0
CC_FORMATION = 0.035
CC_REMOVAL = 0.15
CC_FLOOR = 0.08

# pH physics and acid dosing.
PH_DRIFT_CO2 = 0.015
PH_DRIFT_LOAD = 0.02
PH_PER_CL_DOSED = 0.03
ACID_MAX = 0.3
ACID_KP = 1.0
ACID_KI = 1.0
PH_MIN, PH_MAX = 5.5, 9.5

# ORP.
HOCL_PKA = 7.5
ORP_SLOPE_MV = 150.0
ORP_REF_MV = 725.0  # at 0.6 mg/L free chlorine and pH 7.4
ORP_TAU_H = 2.0 / 60.0
HOCL_FLOOR = 0.005

# Turbidity.
TURB_BASE = 0.2
TURB_LOAD = 0.35
FILTRATION_RATE = 0.6 / 4.0  # removal per pass / turnover time in hours

# Temperature.
INDOOR_TAU_H = 3.0
INDOOR_SWING = 0.25
OUTDOOR_TAU_H = 5.0
OUTDOOR_SWING = 2.5

PROCESS_SIGMA = {"cl": 0.02, "ph": 0.01, "turbidity": 0.01, "temperature": 0.05}
SENSOR_SIGMA = {
    "free_chlorine": 0.02,
    "combined_chlorine": 0.02,
    "ph": 0.01,
    "turbidity": 0.02,
    "orp": 3.0,
    "temperature": 0.05,
}
SENSOR_DECIMALS = {
    "free_chlorine": 2,
    "combined_chlorine": 2,
    "ph": 2,
    "turbidity": 2,
    "orp": 0,
    "temperature": 1,
}
NON_NEGATIVE = frozenset({"free_chlorine", "combined_chlorine", "turbidity"})
NORMALS_BLOCK = 4096


@dataclass(frozen=True, slots=True)
class Sample:
    ts_ms: int  # the timestamp the DEVICE reports (may be skewed by a clock-skew fault)
    values: dict[str, float]
    flags: dict[str, str]  # HJ 212 flag per parameter; only non-"N" flags are present


def local_hour(t_ms: int) -> float:
    """Hour of day in Asia/Shanghai, as a float in [0, 24)."""
    return ((t_ms + LOCAL_OFFSET_MS) % MS_PER_DAY) / MS_PER_H


def local_day(t_ms: int) -> int:
    """Days since 1970-01-01 in Asia/Shanghai."""
    return (t_ms + LOCAL_OFFSET_MS) // MS_PER_DAY


def is_weekend(day: int) -> bool:
    return (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday; Monday = 0


def is_open(t_ms: int) -> bool:
    return OPEN_HOUR <= local_hour(t_ms) < CLOSE_HOUR


def opening_intervals(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """The parts of `[start_ms, end_ms)` during which the pool is open, in order."""
    intervals: list[tuple[int, int]] = []
    day = local_day(start_ms)
    while True:
        midnight = day * MS_PER_DAY - LOCAL_OFFSET_MS
        if midnight >= end_ms:
            return intervals
        lo = max(start_ms, midnight + int(OPEN_HOUR * MS_PER_H))
        hi = min(end_ms, midnight + int(CLOSE_HOUR * MS_PER_H))
        if lo < hi:
            intervals.append((lo, hi))
        day += 1


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-0.5 * ((hour - centre) / width) ** 2)


def bather_shape(hour: float, weekend: bool) -> float:
    """Bather load by local hour before the day and pool factors; 0 when closed."""
    if not OPEN_HOUR <= hour < CLOSE_HOUR:
        return 0.0
    if weekend:
        return (
            0.25
            + 0.25 * _bump(hour, 8.5, 1.0)
            + 0.6 * _bump(hour, 15.0, 2.0)
            + 0.8 * _bump(hour, 19.5, 1.5)
        )
    return (
        0.15
        + 0.45 * _bump(hour, 7.0, 0.8)
        + 0.3 * _bump(hour, 12.5, 1.0)
        + 0.85 * _bump(hour, 19.5, 1.3)
    )


def sunlight(hour: float) -> float:
    """Clear-sky UV intensity, 0..1, for a summer day in eastern China."""
    if not 6.0 <= hour < 19.0:
        return 0.0
    return math.sin(math.pi * (hour - 6.0) / 13.0)


def hocl_fraction(ph: float) -> float:
    return 1.0 / (1.0 + 10.0 ** (ph - HOCL_PKA))


ORP_E0 = ORP_REF_MV - ORP_SLOPE_MV * math.log10(0.6 * hocl_fraction(7.4))


def orp_mv(free_chlorine: float, ph: float) -> float:
    hocl = max(free_chlorine * hocl_fraction(ph), HOCL_FLOOR)
    return ORP_E0 + ORP_SLOPE_MV * math.log10(hocl)


@dataclass(frozen=True, slots=True)
class PoolTraits:
    """What distinguishes one pool from another, drawn once from the seed."""

    cl_setpoint: float
    ph_setpoint: float
    load_scale: float
    orp_offset: float
    water_temperature: float  # indoor heating setpoint, or outdoor seasonal mean


@dataclass(frozen=True, slots=True)
class DayConditions:
    load_factor: float
    cloud_factor: float  # fraction of clear-sky sunlight reaching the water
    weather_offset: float  # degC added to the outdoor mean


@dataclass(slots=True)
class _Water:
    t_ms: int
    cl: float
    cl_in_transit: float  # dosed but not yet mixed into the pool, mg/L of pool volume
    cl_integral: float
    cc: float
    ph: float
    acid_integral: float
    turbidity: float
    temperature: float
    orp_electrode: float


@dataclass(slots=True)
class _Outage:
    """Alternating up/down periods of an intermittent link, drawn on true time."""

    rng: np.random.Generator
    loss_fraction: float
    mean_down_ms: float
    down: bool = False
    next_switch_ms: int | None = None

    def is_down(self, t_ms: int) -> bool:
        if self.loss_fraction <= 0.0 or self.loss_fraction >= 1.0:
            return self.loss_fraction >= 1.0
        if self.next_switch_ms is None:
            self.next_switch_ms = t_ms + self._duration()
        while self.next_switch_ms <= t_ms:
            self.down = not self.down
            self.next_switch_ms += self._duration()
        return self.down

    def _duration(self) -> int:
        # Up periods are scaled so that down time is `loss_fraction` of the total on average.
        mean_up_ms = self.mean_down_ms * (1.0 - self.loss_fraction) / self.loss_fraction
        return max(1, int(self.rng.exponential(self.mean_down_ms if self.down else mean_up_ms)))


def _may_integrate(output: float, error: float, limit: float) -> bool:
    """Conditional integration (anti-windup): hold the integral while the actuator is saturated
    and the error pushes it further into saturation, so a pump failure does not leave the
    controller wound up and overdosing once the pump works again."""
    return (output < limit or error < 0.0) and (output > 0.0 or error > 0.0)


def _seed_words(seed: int, device_id: str) -> list[int]:
    return [seed & 0xFFFFFFFFFFFFFFFF, zlib.crc32(device_id.encode())]


class PoolModel:
    """One pool and its analyzer; see the module docstring for the physics.

    `interval_s` is the nominal reporting interval, kept for the runner: the model accepts steps
    of any size. `start_ms` sets the time of the initial steady state; without it the first
    sample sets it.
    """

    def __init__(
        self,
        device_id: str,
        seed: int,
        *,
        indoor: bool = True,
        interval_s: int = 60,
        faults: Sequence[Fault] = (),
        start_ms: int | None = None,
    ) -> None:
        self.device_id = device_id
        self.indoor = indoor
        self.interval_s = interval_s
        self.faults = tuple(faults)
        self._words = _seed_words(seed, device_id)
        self._rng = np.random.Generator(np.random.PCG64(self._words))
        self._normals: list[float] = []
        self._normal_index = 0
        self.traits = self._draw_traits()
        self._physical = [f for f in self.faults if f.is_physical]
        self._day_cache: tuple[int, DayConditions] | None = None
        self._water: _Water | None = None
        if start_ms is not None:
            self._water = self._equilibrium(start_ms)
        self._last_measured: dict[str, float] = {}
        self._noise: dict[str, float] = {}
        self._stuck_values: dict[int, float] = {}
        self._outages = {
            i: self._outage_process(i, f)
            for i, f in enumerate(self.faults)
            if f.kind is FaultKind.INTERMITTENT_CONNECTIVITY
        }
        replays = [f for f in self.faults if f.kind is FaultKind.REPLAY]
        self._record_from_ms = min(
            (f.start_ms - int(float(f.params["loop_hours"]) * MS_PER_H) for f in replays),
            default=None,
        )
        self._history_ts: list[int] = []
        self._history: list[tuple[dict[str, float], dict[str, str]]] = []

    # -- public -------------------------------------------------------------------------------

    def sample(self, t_ms: int) -> Sample | None:
        if self._water is None:
            self._water = self._equilibrium(t_ms)
        if t_ms < self._water.t_ms:
            raise ValueError(f"sample at {t_ms} is before the model time {self._water.t_ms}")
        self._advance(t_ms)
        values = self._measure(self._water)
        flags: dict[str, str] = {}
        self._apply_sensor_faults(t_ms, values, flags)
        self._remember(t_ms, values, flags)
        values, flags = self._replayed(t_ms, values, flags)
        if self._silent(t_ms):
            return None
        return Sample(ts_ms=t_ms + self._skew_ms(t_ms), values=values, flags=flags)

    def bather_load(self, t_ms: int) -> float:
        day = local_day(t_ms)
        shape = bather_shape(local_hour(t_ms), is_weekend(day))
        return shape * self._day(day).load_factor * self.traits.load_scale

    # -- set-up -------------------------------------------------------------------------------

    def _draw_traits(self) -> PoolTraits:
        rng = self._rng
        return PoolTraits(
            cl_setpoint=float(rng.uniform(0.55, 0.7)),
            ph_setpoint=float(rng.uniform(7.3, 7.5)),
            load_scale=float(rng.uniform(0.7, 1.1)),
            orp_offset=float(rng.normal(0.0, 6.0)),
            water_temperature=float(
                rng.uniform(26.0, 28.0) if self.indoor else rng.uniform(25.0, 28.0)
            ),
        )

    def _day(self, day: int) -> DayConditions:
        # Drawn from (seed, device, day), not from the main stream, so a day's conditions do not
        # depend on when or how often the model is sampled.
        if self._day_cache is None or self._day_cache[0] != day:
            rng = np.random.Generator(np.random.PCG64([*self._words, day]))
            conditions = DayConditions(
                load_factor=float(rng.uniform(0.8, 1.15)),
                cloud_factor=float(rng.uniform(0.3, 1.0)),
                weather_offset=float(rng.normal(0.0, 0.7)),
            )
            self._day_cache = (day, conditions)
        return self._day_cache[1]

    def _outage_process(self, index: int, fault: Fault) -> _Outage:
        # Its own stream, so outages do not shift the physics and sensor noise of the run.
        rng = np.random.Generator(np.random.PCG64([*self._words, 1_000_000 + index]))
        return _Outage(
            rng=rng,
            loss_fraction=float(fault.params["loss_fraction"]),
            mean_down_ms=float(fault.params["mean_outage_min"]) * 60 * MS_PER_S,
        )

    def _equilibrium(self, t_ms: int) -> _Water:
        """Water at the steady state of the conditions at `t_ms`, so runs start without a
        transient."""
        traits = self.traits
        load = self.bather_load(t_ms)
        temperature = self._temperature_target(t_ms)
        cl = traits.cl_setpoint
        dose = self._decay_rate(t_ms, load, temperature) * cl
        ph = traits.ph_setpoint
        return _Water(
            t_ms=t_ms,
            cl=cl,
            cl_in_transit=dose * CL_MIX_TAU_H,
            cl_integral=dose,
            cc=CC_FLOOR + CC_FORMATION * load * cl / CC_REMOVAL,
            ph=ph,
            acid_integral=PH_DRIFT_CO2 + PH_DRIFT_LOAD * load + PH_PER_CL_DOSED * dose,
            turbidity=TURB_BASE + TURB_LOAD * load,
            temperature=temperature,
            orp_electrode=orp_mv(cl, ph),
        )

    # -- physics ------------------------------------------------------------------------------

    def _advance(self, t_ms: int) -> None:
        water = self._water
        assert water is not None
        span_ms = t_ms - water.t_ms
        if span_ms <= 0:
            return
        steps = -(-span_ms // (SUBSTEP_MAX_S * MS_PER_S))
        for i in range(1, steps + 1):
            # Evaluate each sub-step at its start time, as explicit Euler does.
            now = water.t_ms
            water.t_ms = water.t_ms + (span_ms * i) // steps - (span_ms * (i - 1)) // steps
            self._step(water, now, (water.t_ms - now) / MS_PER_H)

    def _decay_rate(self, t_ms: int, load: float, temperature: float) -> float:
        rate = CL_DECAY_BASE * CL_DECAY_THETA ** (temperature - 27.0) + CL_DECAY_LOAD * load
        if not self.indoor:
            hour = local_hour(t_ms)
            rate += CL_DECAY_SUN * sunlight(hour) * self._day(local_day(t_ms)).cloud_factor
        return rate

    def _temperature_target(self, t_ms: int) -> float:
        hour = local_hour(t_ms)
        base = self.traits.water_temperature
        if self.indoor:
            return base + INDOOR_SWING * math.sin(2 * math.pi * (hour - 10.0) / 24.0)
        weather = self._day(local_day(t_ms)).weather_offset
        return base + weather + OUTDOOR_SWING * math.sin(2 * math.pi * (hour - 6.0) / 24.0)

    def _step(self, w: _Water, t_ms: int, dt: float) -> None:
        traits = self.traits
        root_dt = math.sqrt(dt)
        load = self.bather_load(t_ms)
        pump, acid_override, ph_push, filtration, release = self._physical_effects(t_ms)

        # Chlorine: PI dosing with conditional integration, through the mixing lag.
        error = traits.cl_setpoint - w.cl
        demand = CL_KP * error + w.cl_integral
        if _may_integrate(demand, error, CL_PUMP_MAX):
            w.cl_integral += CL_KI * error * dt
        dosed = min(max(demand, 0.0), CL_PUMP_MAX) * pump
        mixed = w.cl_in_transit / CL_MIX_TAU_H
        w.cl_in_transit += (dosed - mixed) * dt
        decay = self._decay_rate(t_ms, load, w.temperature)
        w.cl += (mixed - decay * w.cl) * dt + PROCESS_SIGMA["cl"] * root_dt * self._normal()
        w.cl = max(w.cl, 0.0)
        w.cc += (CC_FORMATION * load * w.cl + CC_REMOVAL * (CC_FLOOR - w.cc)) * dt

        # pH: drifts up on its own; acid dosing can only bring it down.
        ph_error = w.ph - traits.ph_setpoint
        acid = ACID_KP * ph_error + w.acid_integral
        if _may_integrate(acid, ph_error, ACID_MAX):
            w.acid_integral += ACID_KI * ph_error * dt
        acid = min(max(acid, 0.0), ACID_MAX) if acid_override is None else acid_override
        drift = PH_DRIFT_CO2 + PH_DRIFT_LOAD * load + PH_PER_CL_DOSED * dosed + ph_push
        w.ph += (drift - acid) * dt + PROCESS_SIGMA["ph"] * root_dt * self._normal()
        w.ph = min(max(w.ph, PH_MIN), PH_MAX)

        # Turbidity: bathers bring particles in, the filter takes them out.
        source = FILTRATION_RATE * (TURB_BASE + TURB_LOAD * load) + release
        w.turbidity += (source - FILTRATION_RATE * filtration * w.turbidity) * dt
        w.turbidity += PROCESS_SIGMA["turbidity"] * root_dt * self._normal()
        w.turbidity = max(w.turbidity, 0.0)

        tau = INDOOR_TAU_H if self.indoor else OUTDOOR_TAU_H
        target = self._temperature_target(t_ms)
        w.temperature += (target - w.temperature) * dt / tau
        w.temperature += PROCESS_SIGMA["temperature"] * root_dt * self._normal()

        follow = 1.0 - math.exp(-dt / ORP_TAU_H)
        w.orp_electrode += (orp_mv(w.cl, w.ph) - w.orp_electrode) * follow

    def _physical_effects(self, t_ms: int) -> tuple[float, float | None, float, float, float]:
        """(pump fraction, forced acid rate, extra pH drift, filtration fraction, release)."""
        pump, acid_override, ph_push, filtration, release = 1.0, None, 0.0, 1.0, 0.0
        for fault in self._physical:
            if not fault.active(t_ms):
                continue
            p = fault.params
            if fault.kind is FaultKind.DOSING_PUMP_FAILURE:
                pump = float(p["remaining_fraction"])
            elif fault.kind is FaultKind.PH_CONTROLLER_RUNAWAY:
                rate = float(p["rate_ph_per_h"])
                acid_override = rate if p["direction"] == "down" else 0.0
                ph_push = rate if p["direction"] == "up" else 0.0
            elif fault.kind is FaultKind.FILTRATION_FAILURE:
                filtration = float(p["remaining_fraction"])
                release = float(p["release_ntu_per_h"])
        return pump, acid_override, ph_push, filtration, release

    def _normal(self) -> float:
        # Standard normals are drawn in blocks: one numpy call per scalar would dominate the cost.
        if self._normal_index == len(self._normals):
            self._normals = self._rng.standard_normal(NORMALS_BLOCK).tolist()
            self._normal_index = 0
        value = self._normals[self._normal_index]
        self._normal_index += 1
        return value

    # -- the analyzer -------------------------------------------------------------------------

    def _measure(self, w: _Water) -> dict[str, float]:
        truth = {
            "free_chlorine": w.cl,
            "combined_chlorine": w.cc,
            "ph": w.ph,
            "turbidity": w.turbidity,
            "orp": w.orp_electrode + self.traits.orp_offset,
            "temperature": w.temperature,
        }
        self._noise = {name: SENSOR_SIGMA[name] * self._normal() for name in POOL_PARAMETERS}
        return {name: self._read(name, truth[name] + self._noise[name]) for name in POOL_PARAMETERS}

    @staticmethod
    def _read(name: str, value: float) -> float:
        if name in NON_NEGATIVE:
            value = max(value, 0.0)
        return round(value, SENSOR_DECIMALS[name]) + 0.0  # + 0.0 turns -0.0 into 0.0

    def _apply_sensor_faults(
        self, t_ms: int, values: dict[str, float], flags: dict[str, str]
    ) -> None:
        for index, fault in enumerate(self.faults):
            if not fault.active(t_ms):
                continue
            p = fault.params
            if fault.kind is FaultKind.SENSOR_DRIFT:
                name = p["parameter"]
                hours = (t_ms - fault.start_ms) / MS_PER_H
                values[name] = self._read(name, values[name] + float(p["rate_per_h"]) * hours)
            elif fault.kind is FaultKind.SENSOR_STUCK:
                name = p["parameter"]
                stuck = self._stuck_values.setdefault(
                    index, self._last_measured.get(name, values[name])
                )
                values[name] = stuck
            elif fault.kind is FaultKind.CALIBRATION:
                name = p["parameter"]
                if p["reference_value"] is not None:
                    # The probe sits in the calibration standard and reads it with its own noise.
                    reference = float(p["reference_value"]) + self._noise[name]
                    values[name] = self._read(name, reference)
                flags[name] = "C"
        self._last_measured = dict(values)

    def _remember(self, t_ms: int, values: dict[str, float], flags: dict[str, str]) -> None:
        if self._record_from_ms is None or t_ms < self._record_from_ms:
            return
        self._history_ts.append(t_ms)
        self._history.append((dict(values), dict(flags)))

    def _replayed(
        self, t_ms: int, values: dict[str, float], flags: dict[str, str]
    ) -> tuple[dict[str, float], dict[str, str]]:
        for fault in self.faults:
            if fault.kind is not FaultKind.REPLAY or not fault.active(t_ms):
                continue
            loop_ms = int(float(fault.params["loop_hours"]) * MS_PER_H)
            end = bisect.bisect_left(self._history_ts, fault.start_ms)
            if end == 0:
                continue  # nothing recorded before the fault: nothing to replay
            first = max(fault.start_ms - loop_ms, self._history_ts[0])
            period = max(fault.start_ms - first, 1)
            source = first + (t_ms - fault.start_ms) % period
            index = max(bisect.bisect_right(self._history_ts, source, hi=end) - 1, 0)
            recorded_values, recorded_flags = self._history[index]
            return dict(recorded_values), dict(recorded_flags)
        return values, flags

    def _silent(self, t_ms: int) -> bool:
        for index, fault in enumerate(self.faults):
            if not fault.active(t_ms):
                continue
            if fault.kind is FaultKind.ANALYZER_OFF and (
                not fault.params["opening_hours_only"] or is_open(t_ms)
            ):
                return True
            if fault.kind is FaultKind.INTERMITTENT_CONNECTIVITY and self._outages[index].is_down(
                t_ms
            ):
                return True
        return False

    def _skew_ms(self, t_ms: int) -> int:
        return sum(
            int(float(f.params["offset_min"]) * 60 * MS_PER_S)
            for f in self.faults
            if f.kind is FaultKind.CLOCK_SKEW and f.active(t_ms)
        )
