"""Word pools for the synthetic summarization documents (names, places, things).

Wide pools keep a tiny model from memorizing whole documents: it has to copy the entities of
each document into its summary.
"""

from __future__ import annotations

FIRST_NAMES = (
    "Anna", "Ben", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
    "Keiko", "Liam", "Maya", "Nikos", "Olga", "Pablo", "Quinn", "Rosa", "Samir", "Tara",
    "Umar", "Vera", "Wei", "Ximena", "Yusuf", "Zoe", "Amir", "Bianca", "Carlos", "Dana",
    "Emil", "Fatima", "Gabriel", "Hana", "Ivan", "Julia", "Kofi", "Lena", "Marco", "Nadia",
)  # fmt: skip

SURNAMES = (
    "Adams", "Brooks", "Costa", "Dube", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen",
    "Khan", "Lopez", "Moreau", "Nowak", "Okafor", "Petrov", "Quist", "Rossi", "Silva", "Tanaka",
    "Unger", "Varga", "Walsh", "Xu", "Yilmaz", "Zhang", "Berg", "Novak", "Mendes", "Larsen",
)  # fmt: skip

CITIES = (
    "Leeds", "Porto", "Graz", "Utrecht", "Malmo", "Bergen", "Lyon", "Turin", "Cork", "Ghent",
    "Aarhus", "Bremen", "Krakow", "Bilbao", "Dundee", "Tampere", "Brno", "Split", "Nantes", "Basel",
    "Exeter", "Lille", "Genoa", "Leipzig", "Seville", "Galway", "Odense", "Salzburg", "Bologna", "Cardiff",
    "Halifax", "Perth", "Durban", "Osaka", "Quebec", "Hobart", "Austin", "Denver", "Calgary", "Adelaide",
)  # fmt: skip

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

STREETS = (
    "Mill Street", "Station Road", "Harbour Lane", "King Street", "Park Avenue", "Church Road",
    "Bridge Street", "Market Square", "Hill Road", "River Walk", "Castle Lane", "Green Street",
)  # fmt: skip

CURRENCIES = ("euros", "pounds", "dollars")

FACILITIES = (
    "library", "swimming pool", "sports hall", "bus station", "primary school", "health centre",
    "skate park", "concert hall", "cycle path", "community garden", "fire station", "car park",
)  # fmt: skip

COMPANIES = (
    "Norland Foods", "Bluepeak Energy", "Cedar Logistics", "Orbit Textiles", "Harbor Bikes",
    "Silverline Rail", "Greenfield Dairy", "Nova Pharma", "Atlas Paper", "Redwood Software",
    "Summit Glass", "Brightwave Solar", "Maple Furniture", "Coral Shipping", "Falcon Motors",
)  # fmt: skip

SITES = ("factory", "warehouse", "store", "office", "bakery", "call centre", "workshop", "data centre")

TEAM_SUFFIXES = ("Rovers", "United", "Athletic", "City", "Wanderers", "Rangers")

COMPETITIONS = ("regional cup", "city league", "spring tournament", "national trophy", "youth cup")

VENUES = ("the old stadium", "the town ground", "Riverside Park", "the national arena")

WEATHER = ("snow", "rain", "fog", "flooding", "storms", "hail")

EXHIBITS = (
    "ancient coins", "modern paintings", "old maps", "Roman pottery", "vintage cameras",
    "children's toys", "medieval armour", "rare books", "folk costumes", "early computers",
)  # fmt: skip

VEHICLES = (
    "red van", "blue bicycle", "white truck", "black motorbike", "green tractor",
    "silver car", "yellow taxi", "grey minibus",
)  # fmt: skip

DEPARTMENTS = (
    "marketing", "sales", "design", "finance", "support", "research",
    "product", "engineering", "legal", "operations", "training", "logistics",
)  # fmt: skip

PROJECTS = (
    "spring campaign", "new website", "mobile app", "customer survey", "office move",
    "training programme", "annual report", "product launch", "pricing review", "hiring plan",
)  # fmt: skip

ROLES = ("designers", "engineers", "analysts", "sales agents", "writers", "testers", "trainers")
