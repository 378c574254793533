// SPDX-License-Identifier: Apache-2.0
#include "server/kserve_v2/v2_json.h"

#include "engine/input_validation.h"

#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace aaren::v2 {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using inference::InferParameter;
using inference::ModelInferRequest;
using nlohmann::json;

json InferParameterToJson(const InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case InferParameter::kBoolParam:
      return p.bool_param();
    case InferParameter::kInt64Param:
      return p.int64_param();
    case InferParameter::kStringParam:
      return p.string_param();
    case InferParameter::kDoubleParam:
      return p.double_param();
    case InferParameter::kUint64Param:
      return p.uint64_param();
    default:
      return nullptr;
  }
}

// One value of field `f` (element `index` of a repeated field; -1: the singular field).
json FieldValue(const Message& m, const Reflection& r, const FieldDescriptor* f, int index) {
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return rep ? r.GetRepeatedInt32(m, f, index) : r.GetInt32(m, f);
    case FieldDescriptor::CPPTYPE_INT64:
      return rep ? r.GetRepeatedInt64(m, f, index) : r.GetInt64(m, f);
    case FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r.GetRepeatedUInt32(m, f, index) : r.GetUInt32(m, f);
    case FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r.GetRepeatedUInt64(m, f, index) : r.GetUInt64(m, f);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r.GetRepeatedDouble(m, f, index) : r.GetDouble(m, f);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r.GetRepeatedFloat(m, f, index) : r.GetFloat(m, f);
    case FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r.GetRepeatedBool(m, f, index) : r.GetBool(m, f);
    case FieldDescriptor::CPPTYPE_ENUM:
      return (rep ? r.GetRepeatedEnum(m, f, index) : r.GetEnum(m, f))->name();
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string s = rep ? r.GetRepeatedString(m, f, index) : r.GetString(m, f);
      if (f->type() == FieldDescriptor::TYPE_BYTES) return absl::Base64Escape(s);
      return s;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoToJson(rep ? r.GetRepeatedMessage(m, f, index) : r.GetMessage(m, f));
  }
  return nullptr;
}

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// A JSON parameter value as an InferParameter.
absl::Status ToInferParameter(const json& v, const std::string& field, InferParameter* out) {
  if (v.is_string()) {
    out->set_string_param(v.get<std::string>());
  } else if (v.is_boolean()) {
    out->set_bool_param(v.get<bool>());
  } else if (v.is_number_unsigned() &&
             v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    out->set_uint64_param(v.get<uint64_t>());
  } else if (v.is_number_integer()) {
    out->set_int64_param(v.get<int64_t>());
  } else if (v.is_number_float()) {
    out->set_double_param(v.get<double>());
  } else {
    return Invalid(field, "a parameter must be a string, a boolean or a number");
  }
  return absl::OkStatus();
}

// A SAX handler that only counts elements (values, arrays and objects) and stops past `limit`:
// the pre-scan of ParseInferRequestJson. Syntax errors stop it too; the parse proper reports
// them.
class ElementCounter final : public nlohmann::json_sax<json> {
 public:
  explicit ElementCounter(int64_t limit) : limit_(limit) {}
  bool over() const { return n_ > limit_; }

  bool null() override { return Count(); }
  bool boolean(bool) override { return Count(); }
  bool number_integer(number_integer_t) override { return Count(); }
  bool number_unsigned(number_unsigned_t) override { return Count(); }
  bool number_float(number_float_t, const string_t&) override { return Count(); }
  bool string(string_t&) override { return Count(); }
  bool binary(binary_t&) override { return Count(); }
  bool start_object(std::size_t) override { return Count(); }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return Count(); }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

 private:
  bool Count() { return ++n_ <= limit_; }
  int64_t limit_;
  int64_t n_ = 0;
};

// Appends the values of a (possibly nested) "data" array, as the tensor's datatype reads them:
// INT32 and FP32 (what the models take); any other datatype's data is left out (the request
// then fails on its datatype, which ParseInfer checks first).
absl::Status FlattenData(const json& data, const std::string& datatype, const std::string& field,
                         inference::InferTensorContents* out, int depth = 0) {
  if (!data.is_array()) return Invalid(field, "must be an array");
  if (depth > 32) return Invalid(field, "nested too deeply");
  for (size_t k = 0; k < data.size(); ++k) {
    const json& v = data[k];
    if (v.is_array()) {
      RETURN_IF_ERROR(FlattenData(v, datatype, field, out, depth + 1));
      continue;
    }
    // (Elements are named by index and type, never dumped: a nested object would recurse.)
    if (datatype == "INT32") {
      if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT32_MAX) ||
          v.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
          v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Invalid(field, absl::StrCat("element ", out->int_contents_size(), " (a ",
                                           v.type_name(), ") is not an INT32"));
      }
      out->add_int_contents(static_cast<int32_t>(v.get<int64_t>()));
    } else if (datatype == "FP32") {
      if (!v.is_number() || std::abs(v.get<double>()) > std::numeric_limits<float>::max()) {
        return Invalid(field, absl::StrCat("element ", out->fp32_contents_size(), " (a ",
                                           v.type_name(), ") is not an FP32 number"));
      }
      out->add_fp32_contents(static_cast<float>(v.get<double>()));
    }
  }
  return absl::OkStatus();
}

// Parses inputs[i] (its binary bytes, if any, are the next binary_data_size bytes at *offset).
absl::Status ParseInput(const json& in, int i, absl::string_view body, size_t* offset,
                        ModelInferRequest* out) {
  const std::string field = absl::StrCat("inputs[", i, "]");
  if (!in.is_object()) return Invalid(field, "must be an object");
  auto* tensor = out->add_inputs();
  auto name = in.find("name");
  if (name == in.end() || !name->is_string()) return Invalid(field + ".name", "a string is needed");
  tensor->set_name(name->get<std::string>());
  auto datatype = in.find("datatype");
  if (datatype == in.end() || !datatype->is_string()) {
    return Invalid(field + ".datatype", "a string is needed");
  }
  tensor->set_datatype(datatype->get<std::string>());
  auto shape = in.find("shape");
  if (shape == in.end() || !shape->is_array()) {
    return Invalid(field + ".shape", "an array of integers is needed");
  }
  for (const json& d : *shape) {
    if (!d.is_number_integer() || (d.is_number_unsigned() && d.get<uint64_t>() > INT64_MAX)) {
      return Invalid(field + ".shape", "an array of integers is needed");
    }
    tensor->add_shape(d.get<int64_t>());
  }
  int64_t binary_size = -1;
  if (auto params = in.find("parameters"); params != in.end()) {
    if (!params->is_object()) return Invalid(field + ".parameters", "must be an object");
    for (const auto& [key, value] : params->items()) {
      if (key == "binary_data_size") {
        if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
            (value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX)) {
          return Invalid(field + ".parameters.binary_data_size", "a byte count >= 0 is needed");
        }
        binary_size = value.get<int64_t>();
        continue;
      }
      RETURN_IF_ERROR(ToInferParameter(value, absl::StrCat(field, ".parameters.", Quoted(key)),
                                       &(*tensor->mutable_parameters())[key]));
    }
  }
  auto data = in.find("data");
  if (binary_size >= 0) {
    if (data != in.end()) {
      return Invalid(field, "both data and parameters.binary_data_size are given; use one");
    }
    if (static_cast<uint64_t>(binary_size) > body.size() - *offset) {
      return Invalid(field + ".parameters.binary_data_size",
                     absl::StrCat(binary_size, " bytes, but only ", body.size() - *offset,
                                  " follow in the body"));
    }
    out->add_raw_input_contents(std::string(body.substr(*offset, binary_size)));
    *offset += static_cast<size_t>(binary_size);
    return absl::OkStatus();
  }
  if (data == in.end()) {
    return Invalid(field, "no data (give data, or parameters.binary_data_size and the bytes)");
  }
  return FlattenData(*data, tensor->datatype(), field + ".data", tensor->mutable_contents());
}

void AppendFloat(std::string* out, float v) {
  if (!std::isfinite(v)) {
    out->append("null");
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);  // shortest exact form
  out->append(buf, ec == std::errc() ? end : buf);
}

}  // namespace

json ProtoToJson(const Message& message) {
  if (const auto* p = dynamic_cast<const InferParameter*>(&message); p != nullptr) {
    return InferParameterToJson(*p);  // as the REST protocol writes parameters: bare values
  }
  const Reflection& r = *message.GetReflection();
  const google::protobuf::Descriptor& d = *message.GetDescriptor();
  json out = json::object();
  for (int i = 0; i < d.field_count(); ++i) {
    const FieldDescriptor* f = d.field(i);
    if (f->is_map()) {
      json map = json::object();
      const FieldDescriptor* key = f->message_type()->map_key();
      const FieldDescriptor* value = f->message_type()->map_value();
      for (int k = 0; k < r.FieldSize(message, f); ++k) {
        const Message& entry = r.GetRepeatedMessage(message, f, k);
        json key_json = FieldValue(entry, *entry.GetReflection(), key, -1);
        const std::string key_text =
            key_json.is_string() ? key_json.get<std::string>() : key_json.dump();
        map[key_text] = FieldValue(entry, *entry.GetReflection(), value, -1);
      }
      out[f->name()] = std::move(map);
    } else if (f->is_repeated()) {
      json list = json::array();
      for (int k = 0; k < r.FieldSize(message, f); ++k)
        list.push_back(FieldValue(message, r, f, k));
      out[f->name()] = std::move(list);
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE ||
               f->containing_oneof() != nullptr) {
      if (r.HasField(message, f)) out[f->name()] = FieldValue(message, r, f, -1);
    } else {
      out[f->name()] = FieldValue(message, r, f, -1);
    }
  }
  return out;
}

int64_t JsonElementLimit(int64_t max_sequence_tokens, int64_t max_row_values) {
  return max_sequence_tokens * (std::max<int64_t>(1, max_row_values) + 1) + 4096;
}

absl::Status ParseInferRequestJson(absl::string_view body, size_t json_bytes,
                                   ModelInferRequest* out, bool* binary_output,
                                   int64_t max_elements) {
  *binary_output = false;
  if (json_bytes > body.size()) {
    return Invalid("Inference-Header-Content-Length",
                   absl::StrCat(json_bytes, " is more than the body's ", body.size(), " bytes"));
  }
  const absl::string_view text = body.substr(0, json_bytes);
  ElementCounter counter(max_elements);
  if (!json::sax_parse(text.begin(), text.end(), &counter) && counter.over()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request: the JSON has more than ", max_elements,
        " elements, more than a request within --max_sequence_tokens needs; send tensors in "
        "binary (binary_data_size) or fewer tokens per request"));
  }
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("request", "the body is not valid JSON");
  if (!j.is_object()) return Invalid("request", "the body must be a JSON object");
  if (auto id = j.find("id"); id != j.end()) {
    if (!id->is_string()) return Invalid("id", "must be a string");
    out->set_id(id->get<std::string>());
  }
  if (auto params = j.find("parameters"); params != j.end()) {
    if (!params->is_object()) return Invalid("parameters", "must be an object");
    for (const auto& [key, value] : params->items()) {
      if (key == "binary_data_output") {
        if (!value.is_boolean()) return Invalid("parameters.binary_data_output", "a boolean");
        *binary_output = value.get<bool>();
        continue;
      }
      RETURN_IF_ERROR(ToInferParameter(value, absl::StrCat("parameters.", Quoted(key)),
                                       &(*out->mutable_parameters())[key]));
    }
  }
  auto inputs = j.find("inputs");
  if (inputs == j.end() || !inputs->is_array()) return Invalid("inputs", "an array is needed");
  size_t offset = json_bytes;
  for (size_t i = 0; i < inputs->size(); ++i) {
    RETURN_IF_ERROR(ParseInput((*inputs)[i], static_cast<int>(i), body, &offset, out));
  }
  if (out->raw_input_contents_size() > 0 && out->raw_input_contents_size() != out->inputs_size()) {
    return Invalid("inputs", "mixing binary and JSON tensor data in one request is not supported");
  }
  if (offset != body.size()) {
    return Invalid("request", absl::StrCat(body.size() - offset,
                                           " bytes follow the JSON and the binary inputs"));
  }
  if (auto outputs = j.find("outputs"); outputs != j.end()) {
    if (!outputs->is_array()) return Invalid("outputs", "must be an array");
    for (size_t i = 0; i < outputs->size(); ++i) {
      const json& o = (*outputs)[i];
      const std::string field = absl::StrCat("outputs[", i, "]");
      auto name = o.is_object() ? o.find("name") : o.end();
      if (!o.is_object() || name == o.end() || !name->is_string()) {
        return Invalid(field + ".name", "a string is needed");
      }
      auto* requested = out->add_outputs();
      requested->set_name(name->get<std::string>());
      if (auto params = o.find("parameters"); params != o.end()) {
        if (!params->is_object()) return Invalid(field + ".parameters", "must be an object");
        for (const auto& [key, value] : params->items()) {
          if (key == "binary_data") {
            if (!value.is_boolean()) return Invalid(field + ".parameters.binary_data", "a boolean");
            *binary_output = value.get<bool>();
            continue;
          }
          RETURN_IF_ERROR(ToInferParameter(value, absl::StrCat(field, ".parameters.", Quoted(key)),
                                           &(*requested->mutable_parameters())[key]));
        }
      }
    }
  }
  return absl::OkStatus();
}

std::string InferResponseToJson(const inference::ModelInferResponse& response, bool binary_output,
                                std::string* binary) {
  std::string out = absl::StrCat("{\"model_name\":", json(response.model_name()).dump(),
                                 ",\"model_version\":", json(response.model_version()).dump());
  if (!response.id().empty()) absl::StrAppend(&out, ",\"id\":", json(response.id()).dump());
  out.append(",\"outputs\":[");
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& t = response.outputs(i);
    if (i > 0) out.push_back(',');
    absl::StrAppend(&out, "{\"name\":", json(t.name()).dump(),
                    ",\"datatype\":", json(t.datatype()).dump(), ",\"shape\":[");
    for (int d = 0; d < t.shape_size(); ++d) absl::StrAppend(&out, d > 0 ? "," : "", t.shape(d));
    out.push_back(']');
    // OUTPUTS is FP32 and travels as raw_output_contents (ToInferResponse).
    const std::string& raw =
        i < response.raw_output_contents_size() ? response.raw_output_contents(i) : std::string();
    if (binary_output) {
      absl::StrAppend(&out, ",\"parameters\":{\"binary_data_size\":", raw.size(), "}}");
      binary->append(raw);
      continue;
    }
    out.append(",\"data\":[");
    for (size_t k = 0; k + 4 <= raw.size(); k += 4) {
      float v;
      std::memcpy(&v, raw.data() + k, 4);
      if (k > 0) out.push_back(',');
      AppendFloat(&out, v);
    }
    out.append("]}");
  }
  out.append("]}");
  return out;
}

}  // namespace aaren::v2
