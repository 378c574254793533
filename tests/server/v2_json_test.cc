// SPDX-License-Identifier: Apache-2.0
// The REST protocol's JSON forms (server/kserve_v2/v2_json.h), without a server: requests with
// JSON and binary tensors, each malformed field named, replies in both forms, and messages as
// Triton's JSON (64-bit integers as numbers, enums by name, unset sub-messages left out).
#include "server/kserve_v2/v2_json.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/model_config.pb.h"

namespace aaren::v2 {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using nlohmann::json;

std::string RawBytes(const std::vector<int32_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

TEST(V2JsonTest, JsonTensorsAndParameters) {
  const std::string body = R"({"id": "r1",
      "parameters": {"sequence_id": 18446744073709551615, "sequence_start": true,
                     "output_mode": "last", "mca_alpha": 0.5, "mca_seed": 7},
      "inputs": [{"name": "TOKENS", "shape": [2, 2], "datatype": "INT32",
                  "data": [[1, 2], [3, 4]]}],
      "outputs": [{"name": "OUTPUTS"}]})";
  ModelInferRequest r;
  bool binary = true;
  ASSERT_TRUE(ParseInferRequestJson(body, body.size(), &r, &binary).ok());
  EXPECT_FALSE(binary);
  EXPECT_EQ(r.id(), "r1");
  EXPECT_EQ(r.parameters().at("sequence_id").uint64_param(), 18446744073709551615ull);
  EXPECT_TRUE(r.parameters().at("sequence_start").bool_param());
  EXPECT_EQ(r.parameters().at("output_mode").string_param(), "last");
  EXPECT_DOUBLE_EQ(r.parameters().at("mca_alpha").double_param(), 0.5);
  EXPECT_EQ(r.parameters().at("mca_seed").int64_param(), 7);
  ASSERT_EQ(r.inputs_size(), 1);
  EXPECT_EQ(r.inputs(0).name(), "TOKENS");
  EXPECT_EQ(std::vector<int64_t>(r.inputs(0).shape().begin(), r.inputs(0).shape().end()),
            (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(std::vector<int32_t>(r.inputs(0).contents().int_contents().begin(),
                                 r.inputs(0).contents().int_contents().end()),
            (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(r.raw_input_contents_size(), 0);
  ASSERT_EQ(r.outputs_size(), 1);
  EXPECT_EQ(r.outputs(0).name(), "OUTPUTS");
}

TEST(V2JsonTest, BinaryTensorsFollowTheJson) {
  std::mt19937 rng(11);
  std::vector<int32_t> tokens(37);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % 1000);
  const std::string header = R"({"inputs": [{"name": "TOKENS", "shape": [37], "datatype": "INT32",
      "parameters": {"binary_data_size": 148}}],
      "outputs": [{"name": "OUTPUTS", "parameters": {"binary_data": true}}]})";
  const std::string body = header + RawBytes(tokens);
  ModelInferRequest r;
  bool binary = false;
  ASSERT_TRUE(ParseInferRequestJson(body, header.size(), &r, &binary).ok());
  EXPECT_TRUE(binary);
  ASSERT_EQ(r.raw_input_contents_size(), 1);
  EXPECT_EQ(r.raw_input_contents(0), RawBytes(tokens));
  EXPECT_FALSE(r.inputs(0).has_contents());
  EXPECT_EQ(r.inputs(0).parameters().count("binary_data_size"), 0u);
}

// Each malformed request fails with INVALID_ARGUMENT naming the field.
TEST(V2JsonTest, EveryBadFieldIsNamed) {
  const std::string ok_input = R"("name": "TOKENS", "shape": [1], "datatype": "INT32")";
  struct Case {
    std::string json;    // the JSON part
    std::string binary;  // bytes after it
    std::string field;   // how the message starts
  };
  const std::vector<Case> cases = {
      {"{not json", "", "request: the body is not valid JSON"},
      {"[1]", "", "request: the body must be a JSON object"},
      {R"({"id": 5, "inputs": []})", "", "id:"},
      {R"({"parameters": [], "inputs": []})", "", "parameters:"},
      {R"({"parameters": {"sequence_id": null}, "inputs": []})", "", "parameters.sequence_id:"},
      {R"({"parameters": {"binary_data_output": 1}, "inputs": []})", "",
       "parameters.binary_data_output:"},
      {R"({})", "", "inputs:"},
      {R"({"inputs": [7]})", "", "inputs[0]:"},
      {R"({"inputs": [{"shape": [1], "datatype": "INT32", "data": [1]}]})", "", "inputs[0].name:"},
      {R"({"inputs": [{"name": "TOKENS", "shape": [1], "data": [1]}]})", "", "inputs[0].datatype:"},
      {R"({"inputs": [{"name": "TOKENS", "shape": [1.5], "datatype": "INT32", "data": [1]}]})", "",
       "inputs[0].shape:"},
      {"{\"inputs\": [{" + ok_input + "}]}", "", "inputs[0]: no data"},
      {"{\"inputs\": [{" + ok_input + ", \"data\": [1.5]}]}", "", "inputs[0].data:"},
      {"{\"inputs\": [{" + ok_input + ", \"data\": [4294967296]}]}", "", "inputs[0].data:"},
      {"{\"inputs\": [{" + ok_input + ", \"data\": 3}]}", "", "inputs[0].data:"},
      {"{\"inputs\": [{" + ok_input + ", \"data\": [18446744073709551615]}]}", "",
       "inputs[0].data:"},
      {"{\"inputs\": [{" + ok_input + ", \"data\": [{\"a\": [[1]]}]}]}", "", "inputs[0].data:"},
      {R"({"inputs": [{"name": "F", "shape": [1], "datatype": "FP32", "data": [1e300]}]})", "",
       "inputs[0].data:"},
      {R"({"inputs": [{"name": "T", "shape": [18446744073709551615], "datatype": "INT32",
          "data": [1]}]})",
       "", "inputs[0].shape:"},
      {"{\"inputs\": [{" + ok_input +
           ", \"parameters\": {\"binary_data_size\": 18446744073709551615}}]}",
       "", "inputs[0].parameters.binary_data_size:"},
      {"{\"inputs\": [{" + ok_input + ", \"parameters\": {\"binary_data_size\": -1}}]}", "",
       "inputs[0].parameters.binary_data_size:"},
      {"{\"inputs\": [{" + ok_input + ", \"parameters\": {\"binary_data_size\": 8}}]}", "abcd",
       "inputs[0].parameters.binary_data_size:"},
      {"{\"inputs\": [{" + ok_input + ", \"data\": [1]}]}", "xyz", "request: 3 bytes follow"},
      {"{\"inputs\": [{" + ok_input +
           ", \"data\": [1], \"parameters\": {\"binary_data_size\": 4}}]}",
       "", "inputs[0]: both data and"},
      {"{\"inputs\": [{" + ok_input + ", \"data\": [1]}], \"outputs\": [{\"id\": 1}]}", "",
       "outputs[0].name:"},
      {"", "{\"inputs\": []}", "request: the body is not valid JSON"},
  };
  for (const Case& c : cases) {
    ModelInferRequest r;
    bool binary = false;
    const std::string body = c.json + c.binary;
    absl::Status st = ParseInferRequestJson(body, c.json.size(), &r, &binary);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_EQ(st.message().substr(0, c.field.size()), c.field) << body << " -> " << st;
  }
  // A JSON length beyond the body.
  ModelInferRequest r;
  bool binary = false;
  EXPECT_EQ(ParseInferRequestJson("{}", 3, &r, &binary).message().substr(0, 32),
            "Inference-Header-Content-Length:");
}

// More elements than the limit (here 1,000) is refused before a tree is built, whatever they
// are: empty arrays (the costliest per byte), numbers; at the limit the request parses.
TEST(V2JsonTest, ElementsPastTheLimitAreRefusedBeforeParsing) {
  auto body_of = [](int n, const std::string& element) {
    std::string data;
    for (int i = 0; i < n; ++i) absl::StrAppend(&data, i ? "," : "", element);
    return absl::StrCat(R"({"inputs": [{"name": "TOKENS", "shape": [)", n,
                        R"(], "datatype": "INT32", "data": [)", data, "]}]}");
  };
  for (const std::string element : {"[]", "1", "{}", "\"x\""}) {
    ModelInferRequest r;
    bool binary = false;
    const std::string body = body_of(1000, element);
    absl::Status st = ParseInferRequestJson(body, body.size(), &r, &binary, 1000);
    EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << element << ": " << st;
    EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("more than 1000 elements"));
  }
  // 990 numbers, the arrays and objects around them: within 1,000.
  ModelInferRequest r;
  bool binary = false;
  const std::string body = body_of(990, "1");
  ASSERT_TRUE(ParseInferRequestJson(body, body.size(), &r, &binary, 1000).ok());
  EXPECT_EQ(r.inputs(0).contents().int_contents_size(), 990);
  // A malformed body is still the parse's error, not the limit's.
  EXPECT_EQ(ParseInferRequestJson("{\"inputs\": [", 12, &r, &binary, 1000).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_GT(JsonElementLimit(1 << 20, 8), int64_t{9} << 20);
}

TEST(V2JsonTest, RepliesInJsonAndInBinary) {
  ModelInferResponse r;
  r.set_model_name("demo-lm");
  r.set_model_version("1");
  r.set_id("req \"7\"");
  auto* t = r.add_outputs();
  t->set_name("OUTPUTS");
  t->set_datatype("FP32");
  t->add_shape(2);
  t->add_shape(3);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> values(6);
  for (float& v : values) v = normal(rng) * 1e3f;
  r.add_raw_output_contents()->assign(reinterpret_cast<const char*>(values.data()),
                                      values.size() * 4);

  std::string binary;
  const json j = json::parse(InferResponseToJson(r, false, &binary));
  EXPECT_TRUE(binary.empty());
  EXPECT_EQ(j["model_name"], "demo-lm");
  EXPECT_EQ(j["id"], "req \"7\"");
  EXPECT_EQ(j["outputs"][0]["shape"], json::array({2, 3}));
  ASSERT_EQ(j["outputs"][0]["data"].size(), 6u);
  for (size_t k = 0; k < 6; ++k) {
    EXPECT_EQ(j["outputs"][0]["data"][k].get<float>(), values[k]);  // exactly: shortest form
  }

  const json b = json::parse(InferResponseToJson(r, true, &binary));
  EXPECT_EQ(b["outputs"][0]["parameters"]["binary_data_size"], 24);
  EXPECT_FALSE(b["outputs"][0].contains("data"));
  ASSERT_EQ(binary.size(), 24u);
  EXPECT_EQ(std::memcmp(binary.data(), values.data(), 24), 0);
}

TEST(V2JsonTest, MessagesAsTritonWritesThem) {
  inference::ModelConfig config;
  config.set_name("m");
  config.set_max_batch_size(0);
  auto* in = config.add_input();
  in->set_name("TOKENS");
  in->set_data_type(inference::TYPE_INT32);
  in->add_dims(-1);
  config.mutable_sequence_batching()->set_max_sequence_idle_microseconds(3600000000ull);
  const json j = ProtoToJson(config);
  EXPECT_EQ(j["name"], "m");
  EXPECT_EQ(j["max_batch_size"], 0);  // defaults are written
  EXPECT_EQ(j["input"][0]["data_type"], "TYPE_INT32");
  EXPECT_EQ(j["input"][0]["dims"], json::array({-1}));
  EXPECT_TRUE(j["sequence_batching"]["max_sequence_idle_microseconds"].is_number_unsigned());
  EXPECT_EQ(j["sequence_batching"]["max_sequence_idle_microseconds"], 3600000000ull);
  EXPECT_FALSE(j.contains("dynamic_batching"));  // unset: perf_analyzer reads its presence
}

}  // namespace
}  // namespace aaren::v2
