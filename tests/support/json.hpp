// A strict little JSON reader for tests that check a JSON document field by field (objects,
// arrays, strings with escapes, numbers, true/false/null). A malformed document throws.
#pragma once

#include <cctype>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace quell::test {

class json {
 public:
  enum class kind { null, boolean, number, string, array, object };

  static json parse(std::string_view text) {
    std::size_t i = 0;
    json j = value(text, i);
    skip(text, i);
    if (i != text.size()) fail("trailing characters", i);
    return j;
  }

  kind type() const noexcept { return kind_; }
  bool has(const std::string& key) const { return kind_ == kind::object && object_.count(key) != 0; }
  const json& operator[](const std::string& key) const {
    if (kind_ != kind::object) throw std::logic_error("json: not an object (looking for \"" + key + "\")");
    auto it = object_.find(key);
    if (it == object_.end()) throw std::logic_error("json: no field \"" + key + "\"");
    return it->second;
  }
  const json& operator[](std::size_t i) const {
    if (kind_ != kind::array || i >= array_.size()) throw std::logic_error("json: no element " + std::to_string(i));
    return array_[i];
  }
  std::size_t size() const {
    if (kind_ == kind::array) return array_.size();
    if (kind_ == kind::object) return object_.size();
    throw std::logic_error("json: size() of a scalar");
  }
  const std::string& str() const {
    if (kind_ != kind::string) throw std::logic_error("json: not a string");
    return string_;
  }
  double number() const {
    if (kind_ != kind::number) throw std::logic_error("json: not a number");
    return number_;
  }
  bool boolean() const {
    if (kind_ != kind::boolean) throw std::logic_error("json: not a boolean");
    return boolean_;
  }

 private:
  [[noreturn]] static void fail(const char* what, std::size_t at) {
    throw std::invalid_argument(std::string("json: ") + what + " at offset " + std::to_string(at));
  }
  static void skip(std::string_view t, std::size_t& i) {
    while (i < t.size() && (t[i] == ' ' || t[i] == '\n' || t[i] == '\t' || t[i] == '\r')) ++i;
  }
  static void expect(std::string_view t, std::size_t& i, std::string_view word) {
    if (t.substr(i, word.size()) != word) fail("unexpected token", i);
    i += word.size();
  }
  static std::string string_at(std::string_view t, std::size_t& i) {
    if (i >= t.size() || t[i] != '"') fail("expected a string", i);
    ++i;
    std::string s;
    while (i < t.size() && t[i] != '"') {
      char c = t[i++];
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string", i);
      if (c != '\\') {
        s += c;
        continue;
      }
      if (i >= t.size()) fail("unterminated escape", i);
      c = t[i++];
      switch (c) {
        case '"':
        case '\\':
        case '/':
          s += c;
          break;
        case 'n':
          s += '\n';
          break;
        case 't':
          s += '\t';
          break;
        case 'r':
          s += '\r';
          break;
        case 'b':
          s += '\b';
          break;
        case 'f':
          s += '\f';
          break;
        case 'u': {
          if (i + 4 > t.size()) fail("short \\u escape", i);
          const unsigned long v = std::strtoul(std::string(t.substr(i, 4)).c_str(), nullptr, 16);
          i += 4;
          if (v >= 0x80) fail("non-ASCII \\u escape (not needed by these tests)", i);
          s += static_cast<char>(v);
          break;
        }
        default:
          fail("bad escape", i);
      }
    }
    if (i >= t.size()) fail("unterminated string", i);
    ++i;
    return s;
  }
  static json value(std::string_view t, std::size_t& i) {
    skip(t, i);
    if (i >= t.size()) fail("unexpected end", i);
    json j;
    const char c = t[i];
    if (c == '{') {
      j.kind_ = kind::object;
      ++i;
      skip(t, i);
      if (i < t.size() && t[i] == '}') {
        ++i;
        return j;
      }
      for (;;) {
        skip(t, i);
        std::string key = string_at(t, i);
        skip(t, i);
        expect(t, i, ":");
        if (j.object_.count(key)) fail("duplicate key", i);
        j.object_.emplace(std::move(key), value(t, i));
        skip(t, i);
        if (i < t.size() && t[i] == ',') {
          ++i;
          continue;
        }
        expect(t, i, "}");
        return j;
      }
    }
    if (c == '[') {
      j.kind_ = kind::array;
      ++i;
      skip(t, i);
      if (i < t.size() && t[i] == ']') {
        ++i;
        return j;
      }
      for (;;) {
        j.array_.push_back(value(t, i));
        skip(t, i);
        if (i < t.size() && t[i] == ',') {
          ++i;
          continue;
        }
        expect(t, i, "]");
        return j;
      }
    }
    if (c == '"') {
      j.kind_ = kind::string;
      j.string_ = string_at(t, i);
      return j;
    }
    if (c == 't' || c == 'f') {
      j.kind_ = kind::boolean;
      j.boolean_ = c == 't';
      expect(t, i, j.boolean_ ? "true" : "false");
      return j;
    }
    if (c == 'n') {
      expect(t, i, "null");
      return j;
    }
    const std::size_t start = i;
    if (t[i] == '-') ++i;
    while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.' || t[i] == 'e' ||
                            t[i] == 'E' || t[i] == '+' || t[i] == '-'))
      ++i;
    if (i == start) fail("unexpected character", i);
    const std::string num(t.substr(start, i - start));
    char* end = nullptr;
    j.kind_ = kind::number;
    j.number_ = std::strtod(num.c_str(), &end);
    if (end != num.c_str() + num.size()) fail("bad number", start);
    return j;
  }

  kind kind_ = kind::null;
  bool boolean_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<json> array_;
  std::map<std::string, json> object_;
};

}  // namespace quell::test
