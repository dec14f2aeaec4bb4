//! CMake configure and build steps. Not written yet; see the README's status table.
