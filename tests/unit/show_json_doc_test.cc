// docs/show-json.md documents the JSON of `show --json`: every message and
// enum the JSON can hold has a section there, and its table names exactly the
// message's fields (the enum's values). A field added without a line, or a
// documented field renamed or removed (which would break scripts: raise
// schema_version and say so), fails here.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "minicriu.pb.h"

namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;

// Section name -> the names in the first column of its table.
std::map<std::string, std::set<std::string>> documented() {
  std::ifstream in(std::string(MINICRIU_SOURCE_DIR) + "/docs/show-json.md");
  std::map<std::string, std::set<std::string>> out;
  std::string line, section;
  std::regex row(R"(^\| `(\w+)` \|)");
  while (std::getline(in, line)) {
    if (line.rfind("### ", 0) == 0) {
      section = line.substr(4);
      out[section];
    }
    std::smatch m;
    if (!section.empty() && std::regex_search(line, m, row)) out[section].insert(m[1]);
  }
  return out;
}

void reachable(const Descriptor* d, std::set<const Descriptor*>& messages, std::set<const EnumDescriptor*>& enums) {
  if (!messages.insert(d).second) return;
  for (int i = 0; i < d->field_count(); i++) {
    const FieldDescriptor* f = d->field(i);
    if (f->message_type()) reachable(f->message_type(), messages, enums);
    if (f->enum_type()) enums.insert(f->enum_type());
  }
}

}  // namespace

TEST(ShowJsonDoc, EveryMessageAndFieldOfTheJsonIsDocumentedAndNothingElse) {
  auto doc = documented();
  ASSERT_FALSE(doc.empty()) << "docs/show-json.md not found under " << MINICRIU_SOURCE_DIR;
  std::set<const Descriptor*> messages;
  std::set<const EnumDescriptor*> enums;
  reachable(minicriu::img::CheckpointView::descriptor(), messages, enums);
  std::set<std::string> sections;
  for (const Descriptor* d : messages) {
    sections.insert(d->name());
    auto it = doc.find(d->name());
    ASSERT_NE(it, doc.end()) << "no section ### " << d->name();
    std::set<std::string> fields;
    for (int i = 0; i < d->field_count(); i++) fields.insert(d->field(i)->name());
    EXPECT_EQ(it->second, fields) << "the table of " << d->name() << " does not list its fields";
  }
  for (const EnumDescriptor* e : enums) {
    sections.insert(e->name());
    auto it = doc.find(e->name());
    ASSERT_NE(it, doc.end()) << "no section ### " << e->name();
    std::set<std::string> values;
    for (int i = 0; i < e->value_count(); i++) values.insert(e->value(i)->name());
    EXPECT_EQ(it->second, values) << "the table of " << e->name() << " does not list its values";
  }
  for (auto& [name, rows] : doc) EXPECT_TRUE(sections.count(name)) << "### " << name << " is not in the JSON";
}
