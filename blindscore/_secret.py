"""A mixin that keeps secret-key objects from being printed, logged, pickled or copied."""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn


class Unexportable:
    """Secret keys inherit this: repr shows only the public key id; pickle and copy raise.

    Persisting a secret key is an explicit act (the module's save function, which writes a 0600
    file), never a side effect of logging, pickling or copying an object that holds it.
    """

    __slots__ = ()
    _save_hint: ClassVar[str] = "use the module's save function"

    public_key: Any

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.public_key.key_id}, <secret>)"

    def __str__(self) -> str:
        return self.__repr__()

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"a blindscore {type(self).__name__} cannot be pickled; {self._save_hint}")

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"a blindscore {type(self).__name__} cannot be pickled; {self._save_hint}")

    def __copy__(self) -> NoReturn:
        raise TypeError(f"a blindscore {type(self).__name__} cannot be copied")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError(f"a blindscore {type(self).__name__} cannot be copied")
