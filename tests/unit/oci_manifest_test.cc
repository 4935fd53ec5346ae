// OCI image manifests as push writes them and `create --from` reads them:
// the exact text (overlaybd's tools read the same annotations), the round
// trip, the docker v2 form, and what is refused.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "ovbd/remote/oci_manifest.h"

namespace ovbd::remote {
namespace {

std::string D(char c) { return "sha256:" + std::string(64, c); }

ImageManifest TwoLayers() {
  ImageManifest m;
  m.config = {kOciConfigType, D('c'), 233};
  m.layers = {{kOverlaybdLayerType, D('1'), 4096}, {kOverlaybdLayerType, D('2'), 1048576}};
  m.volume_size = 10737418240;
  return m;
}

TEST(OciManifest, EncodesWhatOverlaybdReads) {
  const std::string want =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
      R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" + D('c') +
      R"(","size":233},"layers":[)"
      R"({"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" + D('1') +
      R"(","size":4096,"annotations":{"containerd.io/snapshot/overlaybd/blob-digest":")" + D('1') +
      R"(","containerd.io/snapshot/overlaybd/blob-size":"4096"}},)"
      R"({"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" + D('2') +
      R"(","size":1048576,"annotations":{"containerd.io/snapshot/overlaybd/blob-digest":")" + D('2') +
      R"(","containerd.io/snapshot/overlaybd/blob-size":"1048576"}}],)"
      R"("annotations":{"io.ovbdfs.volume-size":"10737418240"}})";
  EXPECT_EQ(EncodeImageManifest(TwoLayers()), want);
}

TEST(OciManifest, RoundTrip) {
  const ImageManifest m = TwoLayers();
  auto d = DecodeImageManifest(EncodeImageManifest(m));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->config.digest, m.config.digest);
  EXPECT_EQ(d->config.media_type, kOciConfigType);
  EXPECT_EQ(d->config.size, 233u);
  EXPECT_FALSE(d->config.overlaybd);
  ASSERT_EQ(d->layers.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(d->layers[i].digest, m.layers[i].digest);
    EXPECT_EQ(d->layers[i].size, m.layers[i].size);
    EXPECT_EQ(d->layers[i].media_type, kOverlaybdLayerType);
    EXPECT_TRUE(d->layers[i].overlaybd);
  }
  EXPECT_EQ(d->volume_size, m.volume_size);
  EXPECT_EQ(EncodeImageManifest(*d), EncodeImageManifest(m));

  ImageManifest no_size = m;
  no_size.volume_size = 0;
  const std::string text = EncodeImageManifest(no_size);
  EXPECT_EQ(text.find(kVolumeSizeAnnotation), std::string::npos);
  EXPECT_EQ(DecodeImageManifest(text)->volume_size, 0u);
}

TEST(OciManifest, DockerV2AndPlainLayers) {
  const std::string text = R"({
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7, "digest": ")" +
                           D('a') + R"("},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 9,
                "digest": ")" + D('b') + R"(", "urls": ["https://x/y"]}]
  })";
  auto d = DecodeImageManifest(text);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->layers.size(), 1u);
  EXPECT_EQ(d->layers[0].digest, D('b'));
  EXPECT_FALSE(d->layers[0].overlaybd);  // a tar.gz, not an overlaybd blob

  // OCI allows the manifest's own mediaType to be absent.
  const std::string oci = R"({"schemaVersion": 2, "config": {"mediaType": "x", "size": 1, "digest": ")" +
                          D('a') + R"("}, "layers": []})";
  EXPECT_TRUE(DecodeImageManifest(oci).ok());
}

TEST(OciManifest, IndexesAreNotSupported) {
  const std::string entry = R"({"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 5, "digest": ")" +
                            D('e') + R"("})";
  for (const std::string& text : {
           R"({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [)" + entry + "]}",
           R"({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json", "manifests": [)" +
               entry + "]}",
           R"({"schemaVersion": 2, "manifests": [)" + entry + "]}",
           std::string(R"({"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": []})"),
       }) {
    auto d = DecodeImageManifest(text);
    ASSERT_FALSE(d.ok()) << text;
    EXPECT_EQ(d.status().code(), Status::Code::kNotSupported) << d.status().ToString();
  }
}

TEST(OciManifest, EveryDigestAndSizeIsChecked) {
  auto with_layer = [](const std::string& layer) {
    return R"({"schemaVersion": 2, "config": {"mediaType": "x", "size": 1, "digest": ")" + D('a') +
           R"("}, "layers": [)" + layer + "]}";
  };
  const std::string ann_d = "containerd.io/snapshot/overlaybd/blob-digest";
  const std::string ann_s = "containerd.io/snapshot/overlaybd/blob-size";
  for (const std::string& text : {
           with_layer(R"({"mediaType": "t", "size": 1, "digest": "sha256:abc"})"),
           with_layer(R"({"mediaType": "t", "size": 1, "digest": ")" + std::string("sha256:") + std::string(64, 'A') + "\"}"),
           with_layer(R"({"mediaType": "t", "size": 1, "digest": "md5:)" + std::string(64, 'a') + "\"}"),
           with_layer(R"({"mediaType": "t", "size": 1})"),
           with_layer(R"({"mediaType": "t", "digest": ")" + D('b') + "\"}"),
           with_layer(R"({"mediaType": "t", "size": -1, "digest": ")" + D('b') + "\"}"),
           with_layer(R"({"mediaType": "t", "size": 1.5, "digest": ")" + D('b') + "\"}"),
           with_layer(R"({"mediaType": "t", "size": "1", "digest": ")" + D('b') + "\"}"),
           with_layer(R"({"size": 1, "digest": ")" + D('b') + "\"}"),
           with_layer(R"({"mediaType": "t", "size": 1, "digest": ")" + D('b') + R"(", "annotations": {")" + ann_d +
                      R"(": ")" + D('c') + "\"}}"),
           with_layer(R"({"mediaType": "t", "size": 1, "digest": ")" + D('b') + R"(", "annotations": {")" + ann_s +
                      R"(": "2"}})"),
           with_layer(R"({"mediaType": "t", "size": 1, "digest": ")" + D('b') + R"(", "annotations": {")" + ann_s +
                      R"(": "1x"}})"),
           with_layer(R"({"mediaType": "t", "size": 1, "digest": ")" + D('b') + R"(", "annotations": []})"),
           with_layer("7"),
           std::string(R"({"schemaVersion": 2, "config": {"mediaType": "x", "size": 1, "digest": "sha256:0"}, "layers": []})"),
           std::string(R"({"schemaVersion": 2, "layers": []})"),
           std::string(R"({"schemaVersion": 2, "config": {"mediaType": "x", "size": 1, "digest": ")") + D('a') + "\"}}",
           std::string(R"({"schemaVersion": "2", "config": {}, "layers": []})"),
           std::string(R"({"schemaVersion": 2, "config": {"mediaType": "x", "size": 1, "digest": ")") + D('a') +
               R"("}, "layers": [], "annotations": {"io.ovbdfs.volume-size": "ten"}})",
           std::string(R"({"schemaVersion": 2, "config": {"mediaType": "x", "size": 1, "digest": ")") + D('a') +
               R"("}, "layers": [], "annotations": {"io.ovbdfs.volume-size": "0"}})",
           std::string(R"({"schemaVersion": 2, "config": {"mediaType": "x", "size": 1, "digest": ")") + D('a') +
               R"("}, "layers": [], "annotations": {"io.ovbdfs.volume-size": 10}})",
           std::string("[]"),
           std::string("{"),
       }) {
    auto d = DecodeImageManifest(text);
    EXPECT_FALSE(d.ok()) << text;
    if (!d.ok()) {
      EXPECT_EQ(d.status().code(), Status::Code::kInvalidArgument) << d.status().ToString();
    }
  }
}

TEST(OciManifest, Limits) {
  ImageManifest m = TwoLayers();
  m.layers.assign(255, {kOverlaybdLayerType, D('3'), 1});
  auto d = DecodeImageManifest(EncodeImageManifest(m));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->layers.size(), 255u);
  m.layers.push_back({kOverlaybdLayerType, D('4'), 1});
  d = DecodeImageManifest(EncodeImageManifest(m));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Status::Code::kTooLarge);

  std::string big = EncodeImageManifest(TwoLayers());
  big.insert(1, R"("pad":")" + std::string(4 << 20, 'x') + "\",");
  d = DecodeImageManifest(big);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Status::Code::kTooLarge);
}

TEST(OciManifest, EncodingBadTextDoesNotThrow) {
  ImageManifest m = TwoLayers();
  m.layers[0].media_type = "bad\xff";
  const std::string text = EncodeImageManifest(m);
  EXPECT_NE(text.find("bad"), std::string::npos);
  EXPECT_TRUE(DecodeImageManifest(text).ok());
}

TEST(OciManifest, ConfigListsTheLayersAsDiffIds) {
  const ImageManifest m = TwoLayers();
  const std::string c = EncodeImageConfig(m.layers);
  EXPECT_EQ(c, EncodeImageConfig(m.layers));  // deterministic: one digest per image
  auto j = nlohmann::json::parse(c, nullptr, false);
  ASSERT_TRUE(j.is_object()) << c;
  EXPECT_EQ(j["os"], "linux");
  EXPECT_TRUE(j["architecture"].is_string());
  EXPECT_EQ(j["rootfs"]["type"], "layers");
  ASSERT_EQ(j["rootfs"]["diff_ids"].size(), 2u);
  EXPECT_EQ(j["rootfs"]["diff_ids"][0], D('1'));
  EXPECT_EQ(j["rootfs"]["diff_ids"][1], D('2'));
}

}  // namespace
}  // namespace ovbd::remote
