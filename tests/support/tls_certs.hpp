// Certificates for TLS tests, made once per test binary with the openssl CLI in a temporary
// directory (removed at exit): a CA (ca.pem), a leaf it signed for localhost (leaf.pem/.key), an
// expired one (expired), one for wrong.example (wronghost), a self-signed one for localhost
// (self), and a CA nobody signed with (other-ca).
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace quell::test {
namespace {

// The certificates, made once per test binary in a temporary directory.
struct certs {
  std::filesystem::path dir;
  std::string path(const std::string& f) const { return (dir / f).string(); }
};

[[maybe_unused]] const certs& test_certs() {
  static const certs c = [] {
    certs r;
    r.dir = std::filesystem::temp_directory_path() / ("quell-tls-" + std::to_string(::getpid()));
    std::filesystem::create_directories(r.dir);
    std::ofstream(r.dir / "gen.sh") << R"(set -e
cd "$1"
k="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $k -keyout ca.key -out ca.pem -days 30 -subj /CN=quell-test-ca 2>/dev/null
openssl req -x509 $k -keyout other-ca.key -out other-ca.pem -days 30 -subj /CN=quell-other-ca 2>/dev/null
openssl req -x509 $k -keyout self.key -out self.pem -days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
printf '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\ndefault_md=sha256\npolicy=p\ncopy_extensions=copy\nunique_subject=no\n[p]\ncommonName=supplied\n' > ca.cnf
: > index.txt; echo 01 > serial
leaf() {
  openssl req -new $k -keyout $1.key -out $1.csr -subj /CN=$2 -addext "subjectAltName=DNS:$2" 2>/dev/null
  openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in $1.csr -out $1.pem -startdate $3 -enddate $4 -notext 2>/dev/null
}
leaf leaf localhost 20200101000000Z 20991231000000Z
leaf expired localhost 20200101000000Z 20200201000000Z
leaf wronghost wrong.example 20200101000000Z 20991231000000Z
)";
    const std::string cmd = "sh " + (r.dir / "gen.sh").string() + " " + r.dir.string();
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("making test certificates failed: " + cmd);
    std::atexit([] { std::filesystem::remove_all(test_certs().dir); });
    return r;
  }();
  return c;
}

}  // namespace
}  // namespace quell::test
