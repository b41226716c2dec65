"""The landmark and the neighbour: the value types a tag event and the kNN vote are made of.

A :class:`Neighbour` is one reference photo the gallery search found near a query; a
:class:`Landmark` is what the vote decides the query shows. Both travel inside the tag event
(:mod:`schemas.tag_event`), as JSON objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.json_fields import JsonObject, check_keys, check_number, check_object, check_text

ID_MAX_LENGTH = 256
NAME_MAX_LENGTH = 256
#: Squared Euclidean distance between unit vectors lies in [0, 4].
MAX_DISTANCE = 4.0


def check_id(value: object, where: str) -> str:
    """Check an id field of a tag event: text of at most :data:`ID_MAX_LENGTH` characters.

    Args:
        value: The field's value.
        where: Its path, for error messages.

    Returns:
        The id.

    Raises:
        InputError: ``schema_violation`` when the value is no such text.
    """
    return check_text(value, where, max_length=ID_MAX_LENGTH)


@dataclass(frozen=True)
class Landmark:
    """A recognised landmark.

    Attributes:
        landmark_id: Stable identifier (e.g. the folder name or a Google-Landmarks id).
        name: Human-readable name.
    """

    landmark_id: str
    name: str

    def __post_init__(self) -> None:
        check_id(self.landmark_id, "landmark.landmark_id")
        check_text(self.name, "landmark.name", max_length=NAME_MAX_LENGTH)

    def to_dict(self) -> JsonObject:
        """Return the JSON object for this landmark."""
        return {"landmark_id": self.landmark_id, "name": self.name}

    @classmethod
    def from_dict(cls, document: object, where: str = "landmark") -> Landmark:
        """Build a landmark from its JSON object.

        Args:
            document: The parsed JSON value.
            where: Its path, for error messages.

        Returns:
            The landmark.

        Raises:
            InputError: ``schema_violation`` when the object breaks the schema.
        """
        obj = check_object(document, where)
        check_keys(obj, where, ("landmark_id", "name"))
        return cls(
            landmark_id=check_id(obj["landmark_id"], f"{where}.landmark_id"),
            name=check_text(obj["name"], f"{where}.name", max_length=NAME_MAX_LENGTH),
        )


@dataclass(frozen=True)
class Neighbour:
    """One reference photo found near the query.

    Attributes:
        reference_id: The reference photo's id in the gallery.
        landmark_id: The landmark the reference shows.
        landmark_name: That landmark's name.
        distance: Squared Euclidean distance between unit embeddings, in [0, 4].
    """

    reference_id: str
    landmark_id: str
    landmark_name: str
    distance: float

    def __post_init__(self) -> None:
        check_id(self.reference_id, "neighbour.reference_id")
        check_id(self.landmark_id, "neighbour.landmark_id")
        check_text(self.landmark_name, "neighbour.landmark_name", max_length=NAME_MAX_LENGTH)
        check_number(self.distance, "neighbour.distance", minimum=0.0, maximum=MAX_DISTANCE)

    @property
    def landmark(self) -> Landmark:
        """The landmark this reference shows."""
        return Landmark(self.landmark_id, self.landmark_name)

    def to_dict(self) -> JsonObject:
        """Return the JSON object for this neighbour."""
        return {
            "reference_id": self.reference_id,
            "landmark_id": self.landmark_id,
            "landmark_name": self.landmark_name,
            "distance": float(self.distance),
        }

    @classmethod
    def from_dict(cls, document: object, where: str = "neighbour") -> Neighbour:
        """Build a neighbour from its JSON object.

        Args:
            document: The parsed JSON value.
            where: Its path, for error messages.

        Returns:
            The neighbour.

        Raises:
            InputError: ``schema_violation`` when the object breaks the schema.
        """
        obj = check_object(document, where)
        check_keys(obj, where, ("reference_id", "landmark_id", "landmark_name", "distance"))
        return cls(
            reference_id=check_id(obj["reference_id"], f"{where}.reference_id"),
            landmark_id=check_id(obj["landmark_id"], f"{where}.landmark_id"),
            landmark_name=check_text(
                obj["landmark_name"], f"{where}.landmark_name", max_length=NAME_MAX_LENGTH
            ),
            distance=check_number(
                obj["distance"], f"{where}.distance", minimum=0.0, maximum=MAX_DISTANCE
            ),
        )
