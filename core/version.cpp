// loom::version(): the library's version, from the generated <loom/version.hpp>.

#include <loom/version.hpp>

namespace loom {

const char* version() { return LOOM_VERSION_STRING; }

}  // namespace loom
