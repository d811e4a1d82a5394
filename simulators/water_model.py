"""A drinking-water supply point (a secondary-supply tank, a school's direct-drinking unit, a small
centralised supply) and the online analyzer at its outlet.

`WaterModel(device_id, seed, subtype=...).sample(t_ms)` advances the water to true time `t_ms`
and returns what the analyzer reports then (or None when nothing is sent). It is a `PoolModel`
with other water: the analyzer side (sensor noise and rounding, stuck/drift/calibration faults,
replay, analyzer off, intermittent links, clock skew) and the Euler sub-stepping are the pool
model's; the physics below replaces the pool's. Deterministic given the seed, the device id and
the sequence of `t_ms`.

Demand (m3/h) follows a daily shape normalised to a mean of 1 and scaled by the tank: residents
draw water early in the morning (07:00), at noon and in the evening (19:30), little at night; a
school draws in the breaks and at lunch on weekdays and next to nothing at night and at weekends.
Each day gets a random factor 0.85-1.15.

Tank: a float or level valve refills it from the network at 1.5 times the peak demand once the
level falls to 45 % of its depth, until it reaches 90 %: the level cycles with demand, a few
refills a day. Mean residence time 8-14 h (storage beyond 48 h is what GB 17051 warns against).

Disinfectant (free chlorine; chlorine dioxide at schools): well mixed in the tank, lost by
first-order decay k (bulk and wall demand, 1/h at 20 degC: 0.08-0.12 in a secondary-supply tank,
0.15-0.25 for a small supply's untreated well water, 0.10-0.15 for chlorine dioxide; +7 %/degC)
and diluted by the refill water, which carries the network's residual (0.05-0.15 mg/L for a
secondary supply, none for a well or for chlorine dioxide). A residual-controlled doser on the
tank's circulation loop (PI: Kp 2, Ki 2 per hour, conditional integration) keeps it near its
setpoint (free chlorine 0.3-0.6 mg/L, chlorine dioxide 0.1-0.2 mg/L) with a capacity of three
times the clean demand, and a flow-paced doser in the inlet brings the refill water up to the
setpoint. A dosing failure (`dosing_pump_failure`) stops both and leaves decay and dilution: a
small supply falls below the GB 5749 tap minimum (0.05 mg/L) within hours, a secondary supply
towards the network's residual.

Turbidity: refill water brings the network's 0.1-0.3 NTU; its coarse half settles out at 0.05 per
hour (fine colloids stay).
A turbidity event (`filtration_failure`: a failed filter cartridge at a school, a mains repair
upstream) releases `release_ntu_per_h` into the tank. pH follows the refill water (7.2-7.8).
Conductivity (200-600 uS/cm, a few per cent from day to day as the network blends its sources)
mixes in with the refills; TDS is 0.65 x conductivity. Water temperature follows the plant room
towards 16-24 degC with a small daily swing. Supply pressure: a variable-speed pump set holds
0.30-0.40 MPa, sagging by up to 0.03 MPa at peak demand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from simulators.faults import Fault, FaultKind
from simulators.pool_model import (
    PoolModel,
    _bump,
    _may_integrate,
    is_weekend,
    local_day,
    local_hour,
)

SECONDARY = "secondary_supply"
SCHOOL = "school_direct_drinking"
SMALL = "small_supply"
SUBTYPES = (SECONDARY, SCHOOL, SMALL)

# What each kind of supply point reports (domain/data/parameters.toml names).
PARAMETERS: dict[str, tuple[str, ...]] = {
    SECONDARY: (
        "free_chlorine", "ph", "turbidity", "conductivity", "temperature", "pressure",
        "tank_level",
    ),
    SCHOOL: ("chlorine_dioxide", "ph", "turbidity", "tds", "temperature"),
    SMALL: ("free_chlorine", "ph", "turbidity", "conductivity", "temperature", "tank_level"),
}  # fmt: skip

REFILL_LOW, REFILL_HIGH = 0.45, 0.90  # level valve opens / closes, fraction of depth
REFILL_RATE = 1.5  # refill flow, x the peak demand
DOSE_KP, DOSE_KI = 2.0, 2.0
DOSE_CAPACITY = 3.0  # x the clean equilibrium dose
DECAY_THETA = 1.07
SETTLING = 0.05  # turbidity removed per hour
TDS_PER_US = 0.65
TEMP_TAU_H = 6.0
PRESSURE_SAG = 0.03  # MPa at twice the mean demand

PROCESS_SIGMA = {"cl": 0.01, "ph": 0.005, "turbidity": 0.003, "temperature": 0.03}
SENSOR_SIGMA = {
    "free_chlorine": 0.01,
    "chlorine_dioxide": 0.005,
    "ph": 0.01,
    "turbidity": 0.004,
    "conductivity": 2.0,
    "tds": 1.5,
    "temperature": 0.05,
    "pressure": 0.003,
    "tank_level": 0.01,
}
SENSOR_DECIMALS = {
    "free_chlorine": 2,
    "chlorine_dioxide": 3,
    "ph": 2,
    "turbidity": 3,
    "conductivity": 0,
    "tds": 0,
    "temperature": 1,
    "pressure": 3,
    "tank_level": 2,
}
NON_NEGATIVE = frozenset(SENSOR_DECIMALS) - {"temperature"}


def demand_shape(hour: float, weekend: bool, school: bool) -> float:
    """Water demand by local hour before normalisation and the day's factor."""
    if school:
        if weekend or not 7.0 <= hour < 18.0:
            return 0.05
        return (
            0.2
            + 1.5 * _bump(hour, 9.8, 0.4)
            + 2.0 * _bump(hour, 12.0, 0.7)
            + _bump(hour, 15.0, 0.5)
        )
    morning = 1.2 * _bump(hour, 8.0 if weekend else 7.0, 1.0)
    return 0.25 + morning + 0.6 * _bump(hour, 12.0, 1.0) + 1.3 * _bump(hour, 19.5, 1.5)


@cache
def _shape_stats(school: bool) -> tuple[float, float]:
    """The shape's (mean, peak) over a week: demand averages 1 x the mean demand."""
    hours = np.arange(0, 7 * 24, 0.25)
    shape = [demand_shape(h % 24, bool((h // 24) % 7 >= 5), school) for h in hours]
    return float(np.mean(shape)), float(np.max(shape))


@dataclass(frozen=True, slots=True)
class WaterTraits:
    """What distinguishes one supply point from another, drawn once from the seed."""

    volume_m3: float
    depth_m: float
    mean_demand: float  # m3/h
    decay: float  # 1/h at 20 degC
    network_residual: float  # mg/L in the refill water
    setpoint: float  # mg/L
    network_turbidity: float
    network_ph: float
    conductivity: float  # uS/cm, the network's mean
    temperature: float
    pressure: float  # MPa


@dataclass(slots=True)
class _Tank:
    t_ms: int
    volume: float  # m3
    refilling: bool
    cl: float
    dose_integral: float
    turbidity: float
    ph: float
    conductivity: float
    temperature: float


class WaterModel(PoolModel):
    """One supply point and its analyzer; see the module docstring."""

    def __init__(
        self,
        device_id: str,
        seed: int,
        *,
        subtype: str = SECONDARY,
        interval_s: int = 60,
        faults: Sequence[Fault] = (),
        start_ms: int | None = None,
    ) -> None:
        if subtype not in SUBTYPES:
            raise ValueError(f"unknown drinking-water subtype {subtype!r} (known: {SUBTYPES})")
        self.subtype = subtype
        self.parameters = PARAMETERS[subtype]
        self.disinfectant = "chlorine_dioxide" if subtype == SCHOOL else "free_chlorine"
        super().__init__(
            device_id, seed, indoor=True, interval_s=interval_s, faults=faults, start_ms=start_ms
        )
        mean, peak = _shape_stats(subtype == SCHOOL)
        self._refill_rate = REFILL_RATE * peak / mean * self._supply.mean_demand

    def demand(self, t_ms: int) -> float:
        """Water drawn, m3/h."""
        day = local_day(t_ms)
        school = self.subtype == SCHOOL
        shape = demand_shape(local_hour(t_ms), is_weekend(day), school) / _shape_stats(school)[0]
        return shape * self._day(day).load_factor * self._supply.mean_demand

    # -- set-up -------------------------------------------------------------------------------

    @property
    def _supply(self) -> WaterTraits:
        """The traits PoolModel keeps as its own kind: a supply point draws WaterTraits."""
        traits: object = self.traits
        assert isinstance(traits, WaterTraits)
        return traits

    def _draw_traits(self) -> WaterTraits:  # type: ignore[override]
        rng = self._rng
        school, small = self.subtype == SCHOOL, self.subtype == SMALL
        volume = float(rng.uniform(5, 20) if school else rng.uniform(60, 180))
        if school:
            decay, residual, setpoint = rng.uniform(0.10, 0.15), 0.0, rng.uniform(0.1, 0.2)
        elif small:
            decay, residual, setpoint = rng.uniform(0.15, 0.25), 0.0, rng.uniform(0.4, 0.6)
        else:
            decay, residual = rng.uniform(0.08, 0.12), rng.uniform(0.05, 0.15)
            setpoint = rng.uniform(0.3, 0.5)
        return WaterTraits(
            volume_m3=volume,
            depth_m=float(rng.uniform(1.5, 2.0) if school else rng.uniform(2.5, 3.5)),
            mean_demand=volume / float(rng.uniform(8.0, 14.0)),
            decay=float(decay),
            network_residual=float(residual),
            setpoint=float(setpoint),
            network_turbidity=float(rng.uniform(0.1, 0.3)),
            network_ph=float(rng.uniform(7.2, 7.8)),
            conductivity=float(rng.uniform(200, 600)),
            temperature=float(rng.uniform(16, 24)),
            pressure=float(rng.uniform(0.30, 0.40)),
        )

    def _equilibrium(self, t_ms: int) -> _Tank:  # type: ignore[override]
        tr = self._supply
        refill = tr.mean_demand / tr.volume_m3  # the average dilution rate
        dose = self._decay(tr.temperature) * tr.setpoint  # the refills arrive at the setpoint
        fine = 0.5 * tr.network_turbidity
        turbidity = fine + (tr.network_turbidity - fine) * refill / (refill + SETTLING)
        return _Tank(
            t_ms=t_ms,
            volume=0.7 * tr.volume_m3,
            refilling=False,
            cl=tr.setpoint,
            dose_integral=max(dose, 0.0),
            turbidity=turbidity,
            ph=tr.network_ph,
            conductivity=self._network_conductivity(t_ms),
            temperature=self._temperature_target(t_ms),
        )

    # -- physics ------------------------------------------------------------------------------

    def _decay(self, temperature: float) -> float:
        tr = self._supply
        return tr.decay * DECAY_THETA ** (temperature - 20.0)

    def _temperature_target(self, t_ms: int) -> float:
        hour = local_hour(t_ms)
        return self._supply.temperature + 0.5 * math.sin(2 * math.pi * (hour - 9.0) / 24.0)

    def _network_conductivity(self, t_ms: int) -> float:
        """The network's blend of sources changes from day to day, smoothly through the day."""
        day, hour = local_day(t_ms), local_hour(t_ms)
        today, tomorrow = (self._day(d).weather_offset for d in (day, day + 1))
        offset = today + (tomorrow - today) * hour / 24.0
        return self._supply.conductivity * (1.0 + 0.04 * offset)

    def _step(self, w: _Tank, t_ms: int, dt: float) -> None:  # type: ignore[override]
        tr = self._supply
        root_dt = math.sqrt(dt)
        pump, release = self._water_effects(t_ms)

        # Level: the valve refills between REFILL_LOW and REFILL_HIGH of the depth.
        level = w.volume / tr.volume_m3
        if level <= REFILL_LOW:
            w.refilling = True
        elif level >= REFILL_HIGH:
            w.refilling = False
        inflow = self._refill_rate if w.refilling else 0.0
        w.volume += (inflow - self.demand(t_ms)) * dt
        w.volume = min(max(w.volume, 0.05 * tr.volume_m3), tr.volume_m3)
        dilution = inflow / w.volume  # 1/h

        # Disinfectant: PI-controlled dosing on the circulation loop, decay, dilution.
        k = self._decay(w.temperature)
        error = tr.setpoint - w.cl
        capacity = DOSE_CAPACITY * (k + tr.mean_demand / tr.volume_m3) * tr.setpoint
        demand = DOSE_KP * error + w.dose_integral
        if _may_integrate(demand, error, capacity):
            w.dose_integral += DOSE_KI * error * dt
        dose = min(max(demand, 0.0), capacity) * pump
        # The refill water is dosed in the inlet, flow-paced, up to the setpoint.
        inlet = tr.network_residual + pump * max(tr.setpoint - tr.network_residual, 0.0)
        w.cl += (dose - k * w.cl + dilution * (inlet - w.cl)) * dt
        w.cl = max(w.cl + PROCESS_SIGMA["cl"] * root_dt * self._normal(), 0.0)

        w.turbidity += (dilution * (tr.network_turbidity - w.turbidity) + release) * dt
        # Only the coarse part settles: fine colloids keep half the network's turbidity.
        w.turbidity -= SETTLING * max(w.turbidity - 0.5 * tr.network_turbidity, 0.0) * dt
        w.turbidity = max(w.turbidity + PROCESS_SIGMA["turbidity"] * root_dt * self._normal(), 0)
        w.ph += dilution * (tr.network_ph - w.ph) * dt
        w.ph += PROCESS_SIGMA["ph"] * root_dt * self._normal()
        w.conductivity += dilution * (self._network_conductivity(t_ms) - w.conductivity) * dt
        w.temperature += (self._temperature_target(t_ms) - w.temperature) * dt / TEMP_TAU_H
        w.temperature += PROCESS_SIGMA["temperature"] * root_dt * self._normal()

    def _water_effects(self, t_ms: int) -> tuple[float, float]:
        """(doser fraction, turbidity released NTU/h) under the active physical faults."""
        pump, release = 1.0, 0.0
        for fault in self._physical:
            if not fault.active(t_ms):
                continue
            if fault.kind is FaultKind.DOSING_PUMP_FAILURE:
                pump = float(fault.params["remaining_fraction"])
            elif fault.kind is FaultKind.FILTRATION_FAILURE:
                release = float(fault.params["release_ntu_per_h"])
        return pump, release

    # -- the analyzer -------------------------------------------------------------------------

    def _measure(self, w: _Tank) -> dict[str, float]:  # type: ignore[override]
        tr = self._supply
        sag = PRESSURE_SAG * min(self.demand(w.t_ms) / (2 * tr.mean_demand), 1.5)
        truth = {
            self.disinfectant: w.cl,
            "ph": w.ph,
            "turbidity": w.turbidity,
            "conductivity": w.conductivity,
            "tds": TDS_PER_US * w.conductivity,
            "temperature": w.temperature,
            "pressure": tr.pressure - sag,
            "tank_level": w.volume / tr.volume_m3 * tr.depth_m,
        }
        self._noise = {name: SENSOR_SIGMA[name] * self._normal() for name in self.parameters}
        return {name: self._read(name, truth[name] + self._noise[name]) for name in self.parameters}

    @staticmethod
    def _read(name: str, value: float) -> float:
        if name in NON_NEGATIVE:
            value = max(value, 0.0)
        return round(value, SENSOR_DECIMALS[name]) + 0.0


def subtype_of(index: int) -> str:
    """The sub-type of the index-th simulated supply point: small, secondary, school in turn."""
    return (SMALL, SECONDARY, SCHOOL)[index % 3]
